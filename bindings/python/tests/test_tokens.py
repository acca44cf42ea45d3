"""API tokens from Python: each token's own key is a member of its
registries with its role until the token is removed; the secret is shown
once and never listed."""

import os
from datetime import timedelta

import pytest

import chittysync as cs


def test_a_token_is_a_member_of_its_registries_until_removed(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "hub.db"))
    services = replica.create_registry("services", [cs.field("name", "text")])

    added = replica.add_token("deploy-bot", ["services"], role="writer", expires_in=timedelta(days=1))
    assert added.name == "deploy-bot"
    assert added.registries == ["services"]
    assert added.role == cs.Role.WRITER
    assert added.secret.startswith("cst_")
    assert added.expires_at - added.created_at == 86_400_000

    listed = replica.tokens()
    assert [t.name for t in listed] == ["deploy-bot"]
    assert listed[0].key == added.key and listed[0].registries == ["services"]
    assert listed[0].last_used_at is None
    assert not hasattr(listed[0], "secret")

    member = next(m for m in services.members() if m.key == added.key)
    assert member.role == cs.Role.WRITER

    removed = replica.remove_token("deploy-bot")
    assert removed.key == added.key
    assert replica.tokens() == []
    assert added.key not in [m.key for m in services.members()]


def test_token_errors_are_of_the_right_kind(tmp_path):
    replica = cs.Replica(os.fspath(tmp_path / "hub.db"))
    services = replica.create_registry("services", [cs.field("name", "text")])

    with pytest.raises(cs.ChittyError.Argument) as caught:
        replica.add_token("not a name", ["services"])
    assert "not a token name" in str(caught.value)
    with pytest.raises(cs.ChittyError.Argument):
        replica.add_token("no-registries", [])
    with pytest.raises(cs.ChittyError.NotFound):
        replica.add_token("bot", ["no-such-registry"])
    with pytest.raises(cs.ChittyError.NotFound):
        replica.remove_token("never-added")
    replica.add_token("bot", ["services"], role="reader", expires_in=60)
    with pytest.raises(cs.ChittyError.Argument):
        replica.add_token("bot", ["services"])

    # Only an admin of the registry can make a token's key a member.
    writer = cs.Replica(os.fspath(tmp_path / "writer.db"))
    services.set_member(writer.public_key, "writer")
    writer.import_bundle(services.export_bundle())
    with pytest.raises(cs.ChittyError.NotPermitted) as caught:
        writer.add_token("bot", ["services"])
    assert "token 'bot'" in str(caught.value)
    assert writer.tokens() == []
