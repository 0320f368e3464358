"""The committed JSON Schema and AsyncAPI files are exactly what the code generates."""

from __future__ import annotations

import orjson

from riverrun.schemas.export import HERE, asyncapi, rendered
from riverrun.schemas.settings import TopicSettings


def test_committed_contract_files_match_the_code() -> None:
    stale = [path for path, content in rendered().items() if (HERE / path).read_bytes() != content]
    assert not stale, f"regenerate with `riverrun schemas export`: {stale} changed"


def test_asyncapi_describes_every_topic_and_its_schema_files_exist() -> None:
    document = asyncapi()
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(TopicSettings().all().values())
    for message in document["components"]["messages"].values():
        for part in (message.get("payload", {}), message.get("headers", {})):
            ref = part.get("$ref")
            if ref:
                assert orjson.loads((HERE / ref).read_bytes())["title"] == message["name"]
