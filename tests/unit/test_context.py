import dataclasses

import pytest

from memento.graph.context import ConfigError, Context, default_config_path, load_context, read_config_file


def test_default_config_file_documents_every_default():
    from_file = load_context(default_config_path())
    assert from_file == Context()
    assert set(read_config_file(default_config_path())) == {f.name for f in dataclasses.fields(Context)}


def test_every_setting_is_described():
    assert all(f.metadata.get("description") for f in dataclasses.fields(Context))


def test_unknown_setting_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[models]\nplaner_model = 'simulated'\n")
    with pytest.raises(ConfigError, match="planer_model"):
        load_context(path)


def test_bad_values_are_refused():
    with pytest.raises(ConfigError, match="max_cycles"):
        Context(max_cycles=0)
    with pytest.raises(ConfigError, match="retrieval_mode"):
        Context(retrieval_mode="telepathy")


def test_missing_config_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_context(tmp_path / "nope.toml")
