"""Settings from the environment: typed, defaulted, and a bad value named in one line."""
import pytest

from receiver.config import ConfigError, Settings


def test_defaults_are_the_specs():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/ens-status.db"
    assert str(settings.database_path) == "var/ens-status.db"
    assert (settings.ens_key_encoding, settings.max_body_bytes) == ("auto", 16777216)
    assert (settings.poll_interval_seconds, settings.poll_grace_seconds, settings.poll_queued_stale_seconds) == (30, 300, 300)
    assert (settings.poll_max_requests_per_minute, settings.poll_window_hours, settings.retention_days) == (60, 72, 30)
    assert (settings.log_level, settings.log_format) == ("INFO", "json")
    assert not settings.sfmc_configured


def test_absolute_database_path_has_four_slashes():
    assert str(Settings.from_env({"DATABASE_URL": "sqlite:////srv/data/x.db"}).database_path) == "/srv/data/x.db"


def test_lists_are_split_and_trimmed():
    settings = Settings.from_env({"ENS_SIGNATURE_KEYS": " a , b,,", "API_TOKENS": "t1"})
    assert settings.ens_signature_keys == ("a", "b") and settings.api_tokens == ("t1",)


@pytest.mark.parametrize("name, value", [
    ("POLL_INTERVAL_SECONDS", "abc"), ("POLL_INTERVAL_SECONDS", "nan"), ("POLL_INTERVAL_SECONDS", "inf"),
    ("MAX_BODY_BYTES", "1.5"), ("MAX_BODY_BYTES", "0"), ("POLL_MAX_REQUESTS_PER_MINUTE", "-1"),
    ("ENS_KEY_ENCODING", "hex"), ("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD"),
    ("DATABASE_URL", "postgresql://db/x"), ("SFMC_AUTH_BASE_URL", "ftp://x"),
])
def test_a_bad_value_names_the_variable_and_the_value(name, value):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    assert str(error.value) == f"{name} has a bad value: {value!r}"


def test_a_bad_secret_is_named_but_not_shown():
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"ENS_SIGNATURE_KEYS": "not-base64!", "ENS_KEY_ENCODING": "base64"})
    assert "not-base64!" not in str(error.value)
    assert str(error.value).startswith("ENS_SIGNATURE_KEYS has a bad value: key 1 is not base64")


def test_text_keys_need_not_be_base64():
    assert Settings.from_env({"ENS_SIGNATURE_KEYS": "not-base64!", "ENS_KEY_ENCODING": "text"}).ens_signature_keys
