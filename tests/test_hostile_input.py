"""What a confused or hostile user types: settings in the environment, options at their
limits, URLs that carry a secret in every place a URL can, and output that cannot be
written. Each gets one line on stderr and a non-zero exit, never a traceback, and no
secret is ever shown.
"""

from __future__ import annotations

import os
import resource
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import BadInput
from core.settings import Settings
from core.urls import check_url, mask_url
from tests.support.cli import ENV, LADDER, ROOT, ladder

SECRET = "s3cr3t-not-to-be-shown"
# Where a case needs a broker that answers, so that it cannot pass by failing to connect:
# the session's private Redis (conftest.redis_url), put in place at run time, and only
# ever in the environment, never on a command line.
REACHABLE = "<the test Redis, without its database>"
CASE_TIMEOUT_S = 30


def shows_secret(text: str, secret: str = SECRET) -> bool:
    """Whether text holds the secret, or any 6 characters of it: a cut secret is shown too."""
    return any(secret[i : i + 6] in text for i in range(len(secret) - 5))


def one_line(
    done: subprocess.CompletedProcess[str], code: int, names: str, secrets: tuple[str, ...] = ()
) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ladder: error: ")
    assert names in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    for secret in (SECRET, *secrets):
        assert not shows_secret(done.stdout + done.stderr, secret)


# --- settings in the environment and options at their limits -----------------------------

SUM = ["run", "--rung", "threads", "--workload", "sum", "--n", "1000"]
KOMBU = ["run", "--rung", "kombu", "--workload", "sum", "--n", "1000"]
PIPELINE = ["run", "--rung", "kombu", "--workload", "pipeline"]
BAD = [
    # (environment, arguments, what the line must name)
    ({"LADDER_VISIBILITY_TIMEOUT_S": "abc"}, ["rungs"], "LADDER_VISIBILITY_TIMEOUT_S must be"),
    ({"LADDER_VISIBILITY_TIMEOUT_S": "nan"}, SUM, "LADDER_VISIBILITY_TIMEOUT_S must be between"),
    ({"LADDER_VISIBILITY_TIMEOUT_S": "inf"}, SUM, "LADDER_VISIBILITY_TIMEOUT_S must be between"),
    ({"LADDER_VISIBILITY_TIMEOUT_S": "0"}, KOMBU, "LADDER_VISIBILITY_TIMEOUT_S must be between"),
    ({"LADDER_VISIBILITY_TIMEOUT_S": "-3"}, KOMBU, "LADDER_VISIBILITY_TIMEOUT_S must be between"),
    (
        {"LADDER_VISIBILITY_TIMEOUT_S": "1e308"},
        KOMBU,
        "LADDER_VISIBILITY_TIMEOUT_S must be between",
    ),
    ({"CELERY_BROKER_URL": "garbage"}, KOMBU, "CELERY_BROKER_URL must look like redis://"),
    (
        {"CELERY_BROKER_URL": f"{REACHABLE}/0", "CELERY_RESULT_BACKEND": "::"},
        KOMBU,
        "CELERY_RESULT_BACKEND must look like redis://",
    ),
    ({}, ["demo", "--flower-port", "70000"], "argument --flower-port"),
    ({}, ["demo", "--flower-port", "-1"], "argument --flower-port"),
    ({}, ["demo", "--rungs", ""], "argument --rungs: must name at least one rung"),
    ({}, ["demo", "--rungs", " , "], "argument --rungs: must name at least one rung"),
    (
        {},
        [*PIPELINE, "--payload-bytes", "10000000", "--batch", "2"],
        "--payload-bytes 10,000,000 x batch 2 makes messages of about 20,000,128 bytes",
    ),
    ({}, ["bench", "--repeat", "0"], "--repeat must be at least 1 (got 0)"),
    ({}, ["bench", "--repeat", "-2"], "--repeat must be at least 1 (got -2)"),
    ({}, [*KOMBU, "--broker", ""], "--broker is empty"),
    ({}, [*KOMBU, "--broker", "@/nonexistent/broker-url"], "cannot read /nonexistent/broker-url"),
    (
        {},
        [*KOMBU, "--broker", f"redis://:{SECRET}@127.0.0.1:6390/0?foo=bar"],
        "an option of unknown name is not taken",
    ),
    (
        {},
        [*KOMBU, "--broker", f"redis://:{SECRET}@127.0.0.1:6390/0?socket_timeout=abc"],
        "option 'socket_timeout' is not taken",
    ),
    ({"CELERY_BROKER_URL": f"{REACHABLE}/\u00b2"}, KOMBU, "not printable ASCII"),
    ({"CELERY_BROKER_URL": f"{REACHABLE}/99"}, KOMBU, "the database must be"),
    ({"CELERY_BROKER_URL": f"{REACHABLE}/0#x"}, KOMBU, "#fragment"),
    (
        {},
        [*KOMBU, "--broker", f"redis://:{SECRET}@ho$t:6390/0"],
        "the host must be a hostname or an IP address (got redis://:***@***:6390/0)",
    ),
    ({}, [*KOMBU, "--broker", f"redis://:{SECRET}/x@127.0.0.1:6390/0"], "percent-encoded"),
    ({}, [*KOMBU, "--broker", f"redis://:{SECRET}?x@127.0.0.1:6390/0"], "percent-encoded"),
    ({}, [*KOMBU, "--broker", f"redis://:{SECRET}#x@127.0.0.1:6390/0"], "percent-encoded"),
    ({}, [*KOMBU, "--broker", f"redis://:{SECRET}@x@127.0.0.1:6390/0"], "percent-encoded"),
    ({}, [*KOMBU, "--broker", SECRET], "must look like redis://"),
]


def password(url: str) -> str:
    return url.split("://:", 1)[1].split("@", 1)[0]


@pytest.fixture(scope="module")
def bad_runs(redis_url: str) -> list[subprocess.CompletedProcess[str]]:
    """Every case at once: each is mostly interpreter start-up. A case that outlasts its
    own timeout fails alone, rather than erroring every other case with it."""
    reachable = redis_url.rpartition("/")[0]

    def run(case: tuple[dict[str, str], list[str], str]) -> subprocess.CompletedProcess[str]:
        env = {name: value.replace(REACHABLE, reachable) for name, value in case[0].items()}
        try:
            return ladder(*case[1], env=env, timeout_s=CASE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(case[1], -1, "", f"timed out ({CASE_TIMEOUT_S} s)")

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(run, BAD))


# The first case waits for all of them, hence the wider timeout.
@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("index", range(len(BAD)), ids=[c[2][:40] for c in BAD])
def test_a_bad_setting_or_option_is_one_line_and_exit_2(
    bad_runs: list[subprocess.CompletedProcess[str]], index: int, redis_url: str
) -> None:
    one_line(bad_runs[index], 2, BAD[index][2], secrets=(password(redis_url),))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_broker_url_file_is_read_and_its_password_never_shown(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(f"redis://:{SECRET}@127.0.0.1:1/0\n")
    settings = Settings.load(broker=f"@{url_file}")
    assert settings.broker_url == f"redis://:{SECRET}@127.0.0.1:1/0"
    assert settings.result_backend == settings.broker_url
    done = ladder(*KOMBU, "--broker", f"@{url_file}", timeout_s=30)
    one_line(done, 1, "cannot reach the broker at redis://:***@127.0.0.1:1/0")


def at_most_512_mib() -> None:
    """In the child: should reading ever be unbounded again, a MemoryError, not all the
    machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["/dev/zero", "1-mb-with-no-newline"])
def test_a_broker_url_file_is_read_no_further_than_64_kib(source: str, tmp_path: Path) -> None:
    path = Path(source)
    if source != "/dev/zero":
        path = tmp_path / "url"
        path.write_text(f"redis://:{SECRET}@127.0.0.1:1/0".ljust(1 << 20, "0"))
    done = ladder(*KOMBU, "--broker", f"@{path}", timeout_s=30, preexec_fn=at_most_512_mib)
    one_line(done, 2, f"the first line of {path} is longer than 65,536 bytes")


@pytest.mark.timeout(30)
def test_a_broker_url_file_is_read_to_its_first_line_only(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url = f"redis://:{SECRET}@127.0.0.1:1/0"
    url_file.write_text(f"\n  {url}\r\n" + "x" * (1 << 20))
    assert Settings.load(broker=f"@{url_file}").broker_url == url


@pytest.mark.timeout(30)
def test_broker_given_on_the_command_line_wins_over_the_environment_for_both() -> None:
    env = {
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:2/0",
    }
    settings = Settings.load(broker="redis://127.0.0.1:3/0", environ=env)
    assert (settings.broker_url, settings.result_backend) == (
        "redis://127.0.0.1:3/0",
        "redis://127.0.0.1:3/0",
    )
    # With no broker URL at all, the private stack is its own result backend.
    assert Settings.load(environ={"CELERY_RESULT_BACKEND": "redis://127.0.0.1:2/0"}) == Settings()


# --- masking: every place a URL can carry a secret ----------------------------------------

MASKED = [
    (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
    (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
    (f"redis://{SECRET}@host:6379/0", "redis://***@host:6379/0"),
    (f"redis://:{SECRET}/x@host:6379/0", "redis://:***@host:6379/0"),
    (f"redis://:{SECRET}?x@host:6379/0", "redis://:***@host:6379/0"),
    (f"redis://:{SECRET}#x@host:6379/0", "redis://:***@host:6379/0"),
    (f"redis://:{SECRET}@x@host:6379/0", "redis://:***@host:6379/0"),
    (f"redis://host:6379/0?password={SECRET}", "redis://host:6379/0?password=***"),
    (f"redis://host:6379/0?a=1&password={SECRET}", "redis://host:6379/0?***=***&password=***"),
    (f"redis://host/0?password=x&{SECRET}", "redis://host/0?password=***&***=***"),
    (f"redis://host:6379/0#{SECRET}", "redis://host:6379/0#***"),
    (f"rediss://u:{SECRET}@host/0?ssl_cert_reqs=none", "rediss://u:***@host/0?ssl_cert_reqs=***"),
    (SECRET, "<not a URL>"),
    (f"://{SECRET}", "<not a URL>"),
    (f"redis://:{SECRET}\n@host", "redis://:***@host"),
    # A word alone before the @, with or without a colon, may be the password.
    (f"redis://{SECRET}:@127.0.0.1:1/0", "redis://***@127.0.0.1:1/0"),
    (f"redis://:pw@host/0;x={SECRET}", "redis://:***@host/***"),
    (f"redis://host/{SECRET}", "redis://host/***"),
    (f"redis://host/0/{SECRET}", "redis://host/***"),
    (f"redis://host:{SECRET}/0", "redis://host:***/0"),
    (f"redis://[{SECRET}]:1/0", "redis://***:1/0"),
    (f"redis://[::1%{SECRET}]:1/0", "redis://***:1/0"),
    (f"redis://{SECRET}$:1/0", "redis://***:1/0"),
    (f"redis://:{SECRET}@[::1]:1/0", "redis://:***@[::1]:1/0"),
    ("redis://host:6379/0", "redis://host:6379/0"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "shown"), MASKED)
def test_mask_url_hides_every_secret(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert not shows_secret(mask_url(url))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("url", [url for url, _ in MASKED if shows_secret(url)])
def test_check_url_refuses_or_takes_without_showing_the_secret(url: str) -> None:
    try:
        taken = check_url(url)
    except BadInput as error:
        assert not shows_secret(str(error))
        assert "\n" not in str(error)
    else:
        # Taken, the URL is shown masked in every later message.
        assert not shows_secret(mask_url(taken))


# --- output that cannot be written ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["rungs"], [*SUM, "--json"], [*SUM], ["--help"], ["run", "--help"]],
    ids=["rungs", "run-json", "run-table", "help", "run-help"],
)
@pytest.mark.parametrize("where", ["closed", "/dev/full"])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(args: list[str], where: str) -> None:
    if where == "closed":
        # The child's stdout is closed before it starts, as `ladder rungs >&-` does.
        done = subprocess.run(
            [*LADDER, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=60,
            check=False,
            preexec_fn=lambda: os.close(1),
        )
        said = "standard output is closed"
    else:
        with open(where, "w") as full:
            done = subprocess.run(
                [*LADDER, *args],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=ENV,
                timeout=60,
                check=False,
            )
        said = "No space left on device"
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"ladder: error: cannot write the output: {said}"]


@pytest.fixture
def full_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder on a filesystem with room for a few kilobytes only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_disk_under_out_is_one_line_and_keeps_what_was_written(full_disk: Path) -> None:
    out = full_disk / "results"
    done = ladder(
        "demo",
        "--quick",
        "--rungs",
        "serial,threads",
        "--no-servers",
        "--out",
        str(out),
        timeout_s=150,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ladder: error: ")]
    assert errors == [
        f"ladder: error: cannot write {out / 'comparison.png'}: No space left on device"
    ]
    assert "Traceback" not in done.stderr
    assert "sum (CPU)" in done.stdout  # the table was shown
    assert (out / "results.json").stat().st_size > 0  # what fitted was kept
