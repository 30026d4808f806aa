"""`sluice serve` refuses bad settings at start-up, exiting non-zero with a message that names
them, and refuses a data directory another broker holds. (How good settings layer — defaults,
TOML file, `--override` — is unit-tested in crates/sluice-broker/src/config.rs.)"""

import subprocess

import pytest

from conftest import SLUICE_BIN

pytestmark = pytest.mark.timeout(60)


def serve(tmp_path, *args):
    return subprocess.run(
        [SLUICE_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("args, needle", [
    (["--override", "no.such.setting=1"], "no.such.setting"),
    (["--override", "num.partitions=abc"], "num.partitions"),
    (["--override", "num.partitions=0"], "num.partitions"),
    (["--override", "auto.create.topics.enable=maybe"], "auto.create.topics.enable"),
    (["--override", "log.cleanup.policy=sometimes"], "log.cleanup.policy"),
    (["--override", "missing-equals-sign"], "key=value"),
    (["--durability", "eventually"], "eventually"),
    (["--advertised-listener", "nohostport"], "advertised"),
])
def test_invalid_settings_fail_start_up(tmp_path, args, needle):
    r = serve(tmp_path, *args)
    assert r.returncode != 0
    assert needle in r.stderr, r.stderr


def test_invalid_config_file_fails_start_up(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('"log.segment.bytes" = "huge"\n')
    r = serve(tmp_path, "--config", str(bad))
    assert r.returncode != 0 and "log.segment.bytes" in r.stderr, r.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("= nonsense\n")
    r = serve(tmp_path, "--config", str(broken))
    assert r.returncode != 0 and "config file" in r.stderr, r.stderr
    r = serve(tmp_path, "--config", str(tmp_path / "absent.toml"))
    assert r.returncode != 0 and "absent.toml" in r.stderr, r.stderr


def test_second_broker_on_the_same_data_dir_is_refused(broker, tmp_path):
    b = broker()
    r = subprocess.run(
        [SLUICE_BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(b.data_dir)],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode != 0 and "in use" in r.stderr, r.stderr
