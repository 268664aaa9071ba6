from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from smsinbox.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_default_a_type_and_help() -> None:
    for field in dataclasses.fields(Settings):
        assert field.default is not dataclasses.MISSING, field.name
        assert str(field.type) in {"str", "int", "float", "bool"}, field.name
        assert len(field.metadata.get("help", "")) > 20, field.name


def test_every_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.field_help() if f"SMSINBOX_{name.upper()}" not in docs]
    assert not missing, f"docs/configuration.md does not explain {missing}"


def test_example_config_names_every_setting_and_parses() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    assert set(example) == set(Settings.field_help())
    assert load_settings(ROOT / "config.example.toml", environ={}) == Settings()


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    config = tmp_path / "smsinbox.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\n')
    settings = load_settings(
        config, environ={"SMSINBOX_PORT": "9100", "SMSINBOX_MIGRATE_ON_START": "false"}
    )
    assert settings.port == 9100
    assert settings.host == "0.0.0.0"
    assert settings.migrate_on_start is False
    assert settings.database_url == Settings().database_url


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "smsinbox.toml"
    config.write_text("db_timeout = 2.5\n")
    assert load_settings(environ={"SMSINBOX_CONFIG": str(config)}).db_timeout == 2.5


def test_overrides_win_and_none_means_unset() -> None:
    settings = load_settings(environ={"SMSINBOX_PORT": "9100"}, port=None, host="::1")
    assert (settings.port, settings.host) == (9100, "::1")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SMSINBOX_PORT": "eighty"}, "SMSINBOX_PORT: expected int"),
        ({"SMSINBOX_MIGRATE_ON_START": "maybe"}, "expected true or false"),
        ({"SMSINBOX_LOG_LEVEL": "loud"}, "log_level must be one of"),
        ({"SMSINBOX_PORT": "70000"}, "port must be between"),
        ({"SMSINBOX_DB_TIMEOUT": "0"}, "db_timeout must be positive"),
        ({"SMSINBOX_DEFAULT_TIME_ZONE": "Mars/Base"}, "not an IANA zone"),
        ({"SMSINBOX_PUSH_RETRY_SCHEDULE": "5,10"}, "starting with 0"),
        ({"SMSINBOX_PUSH_RETRY_SCHEDULE": "0,soon"}, "push_retry_schedule"),
        ({"SMSINBOX_SMPP_REFRESH": "0"}, "smpp_refresh must be positive"),
    ],
)
def test_bad_values_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_unknown_and_mistyped_file_settings_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "smsinbox.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings(config, environ={})
    config.write_text("port = 1.5\n")
    with pytest.raises(ConfigError, match="port: expected int"):
        load_settings(config, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_smpp_refresh_sets_how_often_the_binds_are_read(tmp_path: Path) -> None:
    from smsinbox.services import Services

    settings = load_settings(
        environ={
            "SMSINBOX_SMPP_REFRESH": "0.5",
            "SMSINBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        }
    )
    assert Services.build(settings).smpp.refresh_s == 0.5
