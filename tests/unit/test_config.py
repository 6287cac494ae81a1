"""Settings: validated with a message naming the variable, read from the environment and a TOML
file (the environment wins), old names still read, and printed so they can be pasted back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imgq.config import RENAMED, Settings, SettingsError, as_environment, env_name, load_settings


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMGQ_SETTINGS_FILE", str(tmp_path / "absent.toml"))
    return tmp_path


def test_a_bad_log_level_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError, match="IMGQ_LOG_LEVEL"):
        load_settings()
    monkeypatch.setenv("IMGQ_LOG_LEVEL", "debug")
    assert load_settings().log_level == "debug"


def test_settings_are_read_from_the_toml_file_and_the_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / ".secrets.toml"
    secrets.write_text('max_files = 3\nlease_seconds = 12.5\nbroker_url = "redis://b:6379/1"\n')
    monkeypatch.setenv("IMGQ_SETTINGS_FILE", str(secrets))
    monkeypatch.setenv("IMGQ_MAX_FILES", "7")
    settings = load_settings()
    assert (settings.max_files, settings.lease_seconds, settings.broker_url) == (
        7, 12.5, "redis://b:6379/1")


def test_the_settings_file_defaults_to_secrets_toml_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGQ_SETTINGS_FILE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".secrets.toml").write_text("max_pixels = 1234\n")
    assert load_settings().max_pixels == 1234


def test_an_old_variable_name_is_still_read_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IMGQ_SWEEP_INTERVAL", "42")
    with caplog.at_level(logging.WARNING):
        settings = load_settings()
    assert settings.sweep_interval_seconds == 42
    assert "IMGQ_SWEEP_INTERVAL_SECONDS" in caplog.text
    monkeypatch.setenv("IMGQ_SWEEP_INTERVAL_SECONDS", "7")  # the new name wins
    assert load_settings().sweep_interval_seconds == 7


def test_every_setting_names_its_unit_or_is_a_count() -> None:
    for old, new in RENAMED.items():
        assert new in Settings.model_fields and old not in Settings.model_fields
    timed = [n for n, f in Settings.model_fields.items()
             if f.annotation in (float, "float") and not n.endswith(("_seconds", "_ratio"))]
    assert timed == []


def test_printed_settings_read_back_as_the_same_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(data_dir=tmp_path, animated="reject", cors_origins="http://a,http://b",
                             webhook_secret="s3cret", broker_url="redis://:pw@broker:6379/0")
    lines = as_environment(original)
    assert not any("s3cret" in line or ":pw@" in line for line in lines)
    for line in lines:
        if not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value)
    again = load_settings()
    hidden = {"webhook_secret", "broker_url", "s3_secret_access_key"}
    for name in Settings.model_fields:
        if name not in hidden:
            assert getattr(again, name) == getattr(original, name), env_name(name)
