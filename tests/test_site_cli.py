"""``nearstate site serve``'s options of what each worker keeps of its own (--page-cache,
--page-cache-mb, --card-cache): they reach the site's config and its caches, their
defaults are the config's, and bad values are refused before anything starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nearstate.cli import main
from nearstate.cli.site import cache_settings, site_serve
from nearstate.web.site import SiteConfig, create_site_app


def _site(*args: str):
    ctx = site_serve.make_context("serve", list(args))  # the command's own parsing
    p = ctx.params
    caches = cache_settings(p["page_cache"], p["page_cache_mb"], p["card_cache"])
    config = SiteConfig(dataset=None, secret_key="k", search=False, **caches)
    return config, create_site_app(config).state.site


def test_the_cache_options_reach_the_config_and_the_caches() -> None:
    config, site = _site("--page-cache", "10", "--page-cache-mb", "3", "--card-cache", "64")
    assert (config.page_cache, config.page_cache_bytes, config.card_cache) == (10, 3 << 20, 64)
    assert (site.cache.size, site.cache.max_bytes, site.pages.cards) == (10, 3 << 20, 64)
    _, off = _site("--page-cache-mb", "0", "--card-cache", "0")
    assert off.cache.max_bytes == 0 and off.pages.cards == 0


def test_the_defaults_are_the_configs() -> None:
    config, _ = _site()
    d = SiteConfig(dataset=None, secret_key="k")
    assert (config.page_cache, config.page_cache_bytes, config.card_cache) == (
        d.page_cache, d.page_cache_bytes, d.card_cache)  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--card-cache", "-1", "-1 is not in the range x>=0"),
        ("--page-cache-mb", "-5", "-5 is not in the range x>=0"),
        ("--page-cache-mb", "16MB", "'16MB' is not a valid integer"),
        ("--card-cache", "lots", "'lots' is not a valid integer"),
    ],
)
def test_bad_values_are_refused(tmp_path, option: str, value: str, says: str) -> None:
    res = CliRunner().invoke(main, ["site", "serve", "--data", str(tmp_path), option, value])
    assert res.exit_code == 2
    assert f"Invalid value for '{option}'" in res.output and says in res.output
    assert not any(tmp_path.iterdir())  # refused before anything was made
