"""nearstate.pages: maps and sets copied page by page on write (the overlay's storage)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nearstate.pages import PAGE_SHIFT, PagedMap, PagedSet, by_hash, by_ordinal

ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "pop", "add", "discard", "copy"]),
        st.integers(0, 5000),
        st.integers(),
    ),
    max_size=80,
)


@settings(deadline=None, max_examples=200)
@given(ops)
def test_paged_map_and_set_behave_as_a_dict_and_a_set_and_copies_stay_apart(ops) -> None:
    """Every version made by copy() keeps what it held, whatever is written to the newer
    one; each reads like the dict and set it stands for."""
    m, s = PagedMap(by_ordinal), PagedSet()
    km = PagedMap(by_hash)
    ref_m: dict[int, int] = {}
    ref_s: set[int] = set()
    ref_k: dict[str, int] = {}
    versions = []
    for op, k, v in ops:
        if op == "set":
            m[k] = v
            ref_m[k] = v
            km[str(k)] = v
            ref_k[str(k)] = v
        elif op == "pop":
            assert m.pop(k, None) == ref_m.pop(k, None)
            assert km.pop(str(k), None) == ref_k.pop(str(k), None)
        elif op == "add":
            s.add(k)
            ref_s.add(k)
        elif op == "discard":
            s.discard(k)
            ref_s.discard(k)
        else:
            versions.append((m, s, km, dict(ref_m), set(ref_s), dict(ref_k)))
            m, s, km = m.copy(), s.copy(), km.copy()
    versions.append((m, s, km, ref_m, ref_s, ref_k))
    for vm, vs, vk, rm, rs, rk in versions:
        assert dict(vm.items()) == rm and len(vm) == len(rm) and bool(vm) == bool(rm)
        assert sorted(vm) == sorted(rm) and vm.sorted_keys() == sorted(rm)
        assert list(vm.values()) == [rm[k] for k in vm]  # values in the keys' order
        assert all(vm.get(k) == rm.get(k) and (k in vm) == (k in rm) for k in range(0, 5001, 97))
        assert set(vs) == rs and list(vs) == sorted(rs) and len(vs) == len(rs)
        assert vs.union([1, 2]) == rs | {1, 2}
        assert dict(vk.items()) == rk and all(vk.get(k) == v for k, v in rk.items())


def test_a_copy_shares_its_pages_until_it_writes_one() -> None:
    """Copying a map of 100k entries copies one reference per page; a write copies one page."""
    m = PagedMap(by_ordinal)
    for o in range(0, 200_000, 2):
        m[o] = o
    c = m.copy()
    assert all(c.pages[p] is m.pages[p] for p in m.pages)
    c[10] = -1
    p = 10 >> PAGE_SHIFT
    assert c.pages[p] is not m.pages[p] and m[10] == 10 and c[10] == -1
    assert sum(c.pages[q] is m.pages[q] for q in m.pages) == len(m.pages) - 1
    m[12] = -2  # the older version, written after a copy: its own page, the copy untouched
    assert c[12] == 12 and m[12] == -2


def test_a_key_map_has_about_as_many_pages_as_the_square_root_of_its_keys() -> None:
    """A copy costs the pages' count and a write one page: a key map keeps both near the
    square root of its keys (a handful of keys: a page or two; 20k keys: ~100 pages of
    ~200), and a copy made before it grew keeps reading what it held."""
    km = PagedMap(by_hash)
    for i in range(3):
        km[f"k{i}"] = i
    assert len(km.pages) <= 2
    before = km.copy()
    for i in range(3, 20_000):
        km[f"k{i}"] = i
    assert 64 <= len(km.pages) <= 256
    assert max(len(p) for p in km.pages.values()) <= 4 * 20_000 // len(km.pages)
    assert dict(before.items()) == {f"k{i}": i for i in range(3)} and len(before) == 3
    assert all(km.get(f"k{i}") == i for i in range(20_000)) and len(km) == 20_000
    c = km.copy()
    c["k7"] = -7
    assert sum(c.pages[p] is not km.pages[p] for p in km.pages) == 1 and km["k7"] == 7
