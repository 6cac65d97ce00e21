"""Settings: TOML file < LMOS_* environment < arguments; bad values are EINVAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmos.config import load_config, parse_bytes
from lmos.errors import Errno, SyscallError


def test_precedence(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[lmos]\npolicy = "rr"\nquantum_tokens = 7\nmax_procs = 10\n')
    cfg = load_config(f, env={"LMOS_QUANTUM_TOKENS": "9", "LMOS_MAX_SEQS": "3"}, max_procs=5)
    assert cfg.policy == "rr"  # file
    assert cfg.quantum_tokens == 9  # env beats file
    assert cfg.max_seqs == 3  # env
    assert cfg.max_procs == 5  # argument beats file


def test_home_config_is_found(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[lmos]\npolicy = "priority"\n')
    assert load_config(env={"LMOS_HOME": str(tmp_path)}).policy == "priority"


@pytest.mark.parametrize("bad", [{"policy": "lottery"}, {"max_procs": "many"}, {"no_such_field": 1}])
def test_bad_settings_are_einval(bad: dict[str, object]) -> None:
    with pytest.raises(SyscallError) as ei:
        load_config(env={}, **bad)
    assert ei.value.errno is Errno.EINVAL


def test_bad_toml_is_einval(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[lmos\n")
    with pytest.raises(SyscallError) as ei:
        load_config(f, env={})
    assert ei.value.errno is Errno.EINVAL


def test_parse_bytes() -> None:
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1024") == 1024
    with pytest.raises(SyscallError):
        parse_bytes("lots")
