"""The NATS JetStream backend held to the same contract suites as the local backends
(nearstate.testing), unchanged. Each test gets a dataset of its own on the test server
(tests/natsserver.py); the second handle of a contract has a connection of its own, as a
writer or producer in another process would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from natsserver import drop, server_url, unique
from nearstate.backends.nats_conn import NatsConnection, connection
from nearstate.backends.nats_log import NatsLog
from nearstate.backends.nats_store import NatsAnnouncer, NatsBlobStore
from nearstate.ports import AnnouncementWatcher, Announcer, BlobStore, Log
from nearstate.testing import AnnouncerContract, BlobStoreContract, LogContract

pytest.importorskip("nats", reason="the 'nats' extra is not installed")


@pytest.fixture
def dataset() -> Iterator[str]:
    url = server_url()
    name = unique()
    yield name
    drop(url, name)


@pytest.fixture
def other_connection() -> Iterator[NatsConnection]:
    c = NatsConnection(server_url())
    yield c
    c.close()


class TestNatsBlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, dataset: str) -> BlobStore:
        return NatsBlobStore(connection(server_url()), dataset)


class TestNatsAnnouncer(AnnouncerContract):
    @pytest.fixture
    def announcer(self, dataset: str) -> Announcer:
        return NatsAnnouncer(connection(server_url()), dataset)

    @pytest.fixture
    def watcher(self, dataset: str, other_connection: NatsConnection) -> AnnouncementWatcher:
        return NatsAnnouncer(other_connection, dataset)

    @pytest.fixture
    def second_announcer(self, dataset: str, other_connection: NatsConnection) -> Announcer:
        return NatsAnnouncer(other_connection, dataset)


class TestNatsLog(LogContract):
    @pytest.fixture
    def log(self, dataset: str) -> Log:
        return NatsLog(connection(server_url()), dataset)

    @pytest.fixture
    def second_log(self, dataset: str, other_connection: NatsConnection) -> Log:
        return NatsLog(other_connection, dataset)
