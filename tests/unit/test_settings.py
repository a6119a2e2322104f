"""Settings come from PREDICTSTORE_* variables and from a .env file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from predictstore.settings import Settings


def test_defaults_serve_on_loopback_with_an_embedded_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PREDICTSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("PREDICTSTORE_LISTEN", raising=False)
    settings = Settings(_env_file=None)
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.reflection is True


def test_environment_variables_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDICTSTORE_LISTEN", "[::1]:6000")
    monkeypatch.setenv("PREDICTSTORE_POOL_MAX_SIZE", "3")
    settings = Settings(_env_file=None)
    assert settings.listen == "[::1]:6000"
    assert settings.pool_max_size == 3


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREDICTSTORE_DATABASE_URL", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("PREDICTSTORE_DATABASE_URL=postgresql://db.example/predictstore\n")
    settings = Settings(_env_file=env_file)
    assert settings.database_url == "postgresql://db.example/predictstore"


@pytest.mark.parametrize(
    "listen", ["50051", "localhost", ":50051", "host:port", "127.0.0.1:99999", ":99999"]
)
def test_listen_must_be_host_and_port(listen: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, listen=listen)


def test_unknown_settings_are_named_with_a_guess() -> None:
    from predictstore.settings import unknown_settings

    environ = ["PATH", "PREDICTSTORE_LISTEN", "PREDICTSTORE_LISTN", "PREDICTSTORE_ZZZ"]
    assert unknown_settings(environ, prefixed_only=True) == [
        "PREDICTSTORE_LISTN (did you mean PREDICTSTORE_LISTEN?)",
        "PREDICTSTORE_ZZZ",
    ]
    assert unknown_settings(["LISTEN"], prefixed_only=False) == [
        "LISTEN (did you mean PREDICTSTORE_LISTEN?)"
    ]
