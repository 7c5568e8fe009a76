"""bench/chaos.py: its HAProxy config, and the short run that checks the promise.

The short run goes in SLICES, each a `bench/chaos.py --short --only ...` run
of its own (its own PostgreSQL, HAProxy and Kindler): tests/workers.py makes
each slice a group, so that scripts/test's workers run them side by side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from django.conf import settings

from bench.chaosreport import HealthWatch, Phase, phase_row
from bench.workload import Call, check

ROOT = Path(settings.BASE_DIR)
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None,
    reason="Debian's haproxy is not installed (scripts/test installs it with apt-get as root)",
)
FAULTS = [
    "kill -9",
    "pg_ctl stop -m fast",
    "SIGSTOP 4 s",
    "haproxy disable",
    "haproxy kill",
    "Kindler restart in replay",
    "10,000-write replay under load",
    "PostgreSQL read-only 10 s",
    "PostgreSQL disk full 10 s",
    "backends killed every 0.5 s for 10 s",
    "round trip 1.2 s for 10 s",
    "row locked 5 s",
    "table locked 4 s",
    "connection slots exhausted, pool on",
    "unmigrated PostgreSQL",
    "PostgreSQL restored from an older backup",
    "PostgreSQL replaced by an empty database",
    "restore after acknowledged deletes",
    "earlier instance on a newer schema, through an outage",
    "upgraded in place with a journal",
    "SQLite locked in an outage",
    "SQLite full in an outage",
    "SQLite read-only in an outage",
    "PostgreSQL flapping 15 s",
    "Kindler restarted 5 times",
    "primary killed, standby promoted",
]
# Faults that put a database back or replace it: Kindler writes its rows back into it.
RESTORES = [
    "PostgreSQL restored from an older backup",
    "PostgreSQL replaced by an empty database",
    "restore after acknowledged deletes",
]
# A PostgreSQL that cannot take writes for a while, backends ended again and
# again, a link too slow for a connection: the instance switches at most four
# times, not once per probe or connection.
STEADY = [
    "PostgreSQL read-only 10 s",
    "PostgreSQL disk full 10 s",
    "backends killed every 0.5 s for 10 s",
    "round trip 1.2 s for 10 s",
]
# Faults that need root (a tmpfs mount, chattr +i); skipped with a reason otherwise.
ROOT_ONLY = {
    "PostgreSQL disk full 10 s",
    "SQLite full in an outage",
    "SQLite read-only in an outage",
}
# The short run's faults in runs of about the same length (70 to 110 s on a
# busy 2-core machine), each in FAULTS' order. The promotion ends a run (its
# primary is gone for good afterwards).
SLICES = {
    "outages": FAULTS[:7],
    "postgres": FAULTS[7:15],
    "restores": FAULTS[15:20],
    "sqlite": [
        "SQLite locked in an outage",
        "SQLite full in an outage",
        "PostgreSQL flapping 15 s",
        "primary killed, standby promoted",
    ],
    "restarts": ["SQLite read-only in an outage", "Kindler restarted 5 times"],
}


def slice_of(fault: str) -> str:
    return next(name for name, faults in SLICES.items() if fault in faults)


# Every slice, or the one that holds a fault; the run is made once a slice.
EVERY_SLICE = pytest.mark.parametrize("short_run", list(SLICES), indirect=True)


def slice_holding(fault: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("short_run", [slice_of(fault)], indirect=True)


def faults_of(request: pytest.FixtureRequest) -> list[str]:
    """Return the faults of the slice the test runs on."""
    return SLICES[request.node.callspec.params["short_run"]]


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up in sys.modules while the class is built.
    sys.modules["bench_chaos"] = module
    spec.loader.exec_module(module)
    return module


def test_haproxy_config_keeps_the_compose_health_checks(chaos: ModuleType, tmp_path: Path) -> None:
    config, _ = chaos.haproxy_config(tmp_path, 15432, 25432)
    lines = [line.strip() for line in config.read_text().splitlines()]
    assert "default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions" in lines


def test_haproxy_config_points_at_loopback(chaos: ModuleType, tmp_path: Path) -> None:
    config, _ = chaos.haproxy_config(tmp_path, 15432, 25432)
    lines = [line.strip() for line in config.read_text().splitlines()]
    assert (
        next(line for line in lines if line.startswith("bind ")),
        next(line for line in lines if line.startswith("server ")),
    ) == (
        "bind 127.0.0.1:15432",
        "server primary 127.0.0.1:25432 check init-addr last,libc,none",
    )


@needs_haproxy
def test_haproxy_accepts_the_chaos_config(chaos: ModuleType, tmp_path: Path) -> None:
    config, _ = chaos.haproxy_config(tmp_path, 15432, 25432)
    result = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PG_USER": "kindler", "PATH": "/usr/sbin:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr


def write(kind: str, at: float, status: str, value: int | None = None, detail: str = "") -> Call:
    return Call(kind, at, 0.1, status, "chaos-1", value, detail or None)


def test_check_finds_an_acknowledged_create_missing() -> None:
    problems = check([write("create", 1, "202", 2000)], {})
    assert [p.what for p in problems] == ["acknowledged create missing"]


def test_check_expects_the_last_acknowledged_patch() -> None:
    calls = [
        write("create", 1, "202", 2000),
        write("patch", 2, "200", 3000),
        write("patch", 3, "200", 3001),
    ]
    problems = check(calls, {"chaos-1": ("present", 3000)})
    assert [p.what for p in problems] == ["http_port 3000, expected 3001"]


def test_check_allows_a_patch_whose_outcome_is_unknown() -> None:
    calls = [
        write("create", 1, "202", 2000),
        write("patch", 2, "200", 3000),
        write("patch", 3, "503", 3001, "PostgreSQL went away; it may not have been saved."),
    ]
    assert check(calls, {"chaos-1": ("present", 3001)}) == []


def test_check_finds_a_write_saved_after_nothing_was_saved() -> None:
    calls = [write("create", 1, "503", 2000, "The disk is full, so nothing was saved.")]
    problems = check(calls, {"chaos-1": ("present", 2000)})
    assert [p.what for p in problems] == [
        "create answered 503 The disk is full, so nothing was saved., yet saved"
    ]


def test_check_expects_an_acknowledged_delete() -> None:
    calls = [write("create", 1, "202", 2000), write("delete", 2, "202")]
    problems = check(calls, {"chaos-1": ("present", 2000)})
    assert [p.what for p in problems] == ["acknowledged delete, still present"]


def test_a_delete_undone_by_the_restore_is_counted_apart() -> None:
    calls = [write("create", 1, "202", 2000), write("delete", 2, "202")]
    problems = check(calls, {"chaos-1": ("present", 2000)})
    phase = Phase("restored", started=0, ended=10, back_after_restore={"chaos-1"})
    row = phase_row(phase, calls, problems, HealthWatch(1), budget=6)
    assert (row["missing_or_wrong"], row["deleted_after_backup_back"], row["promise_kept"]) == (
        0,
        1,
        True,
    )


def test_a_delete_lost_otherwise_is_missing_or_wrong() -> None:
    calls = [write("create", 1, "202", 2000), write("delete", 2, "202")]
    problems = check(calls, {"chaos-1": ("present", 2000)})
    phase = Phase("restored", started=0, ended=10, back_after_restore={"chaos-2"})
    row = phase_row(phase, calls, problems, HealthWatch(1), budget=6)
    assert (row["missing_or_wrong"], row["deleted_after_backup_back"], row["promise_kept"]) == (
        1,
        0,
        False,
    )


def test_a_fault_whose_cause_health_does_not_name_breaks_the_promise() -> None:
    phase = Phase("disk full", started=0, ended=10, expected_cause="its disk is full")
    phase.state_cause = "probe: PostgreSQL is read-only (default_transaction_read_only is on)"
    row = phase_row(phase, [], [], HealthWatch(1), budget=6)
    assert (row["cause_named"], row["promise_kept"]) == (False, False)


def test_a_fault_whose_cause_health_names_keeps_the_promise() -> None:
    phase = Phase("disk full", started=0, ended=10, expected_cause="its disk is full")
    phase.state_cause = "probe: PostgreSQL cannot take writes: its disk is full (No space left)"
    row = phase_row(phase, [], [], HealthWatch(1), budget=6)
    assert (row["cause_named"], row["promise_kept"]) == (True, True)


def test_the_slices_hold_every_fault_once_in_order() -> None:
    held = [fault for faults in SLICES.values() for fault in faults]
    in_order = {name: sorted(faults, key=FAULTS.index) for name, faults in SLICES.items()}
    assert (sorted(held, key=FAULTS.index), in_order) == (FAULTS, SLICES)


def test_each_slices_only_arguments_pick_its_faults_alone(chaos: ModuleType) -> None:
    def picked(faults: list[str]) -> list[str]:
        # Chaos.wanted as `--only NAME` for each of faults sets it up.
        only = SimpleNamespace(only=[fault.lower() for fault in faults])
        return [fault for fault in FAULTS if chaos.Chaos.wanted(only, fault)]

    assert {name: picked(faults) for name, faults in SLICES.items()} == SLICES


@pytest.fixture(scope="module")
def short_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """The short run of the faults of the slice request.param names."""
    if HAPROXY is None:
        pytest.skip("Debian's haproxy is not installed (scripts/test installs it as root)")
    output = tmp_path_factory.mktemp("chaos") / "chaos.json"
    only = [arg for fault in SLICES[request.param] for arg in ("--only", fault)]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "chaos.py"),
            "--short",
            *only,
            "--json",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # Exit status 1 only says the promise was not kept everywhere; the tests
    # below check the parts of it that must hold. No report at all is a crash.
    assert output.exists(), result.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_goes_through_every_fault(
    short_run: dict[str, object], request: pytest.FixtureRequest
) -> None:
    faults = short_run["faults"]
    assert isinstance(faults, list)
    assert [row["fault"] for row in faults] == faults_of(request)


def by_fault(short_run: dict[str, object], key: str) -> dict[str, object]:
    faults = short_run["faults"]
    assert isinstance(faults, list)
    return {row["fault"]: row[key] for row in faults if not row["skipped"]}


@pytest.mark.slow
@pytest.mark.timeout(900)
@slice_holding(STEADY[0])
def test_faults_short_of_an_outage_switch_at_most_four_times(short_run: dict[str, object]) -> None:
    changes = by_fault(short_run, "state_changes")
    steady = {name: int(str(changes[name])) <= 4 for name in STEADY}
    assert steady == dict.fromkeys(STEADY, True), {name: changes[name] for name in STEADY}


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_skips_only_what_needs_root(
    short_run: dict[str, object], request: pytest.FixtureRequest
) -> None:
    faults = short_run["faults"]
    assert isinstance(faults, list)
    skipped = {row["fault"] for row in faults if row["skipped"]}
    assert skipped == (set() if os.geteuid() == 0 else ROOT_ONLY & set(faults_of(request)))


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_injects_every_fault(short_run: dict[str, object]) -> None:
    assert {fault: error for fault, error in by_fault(short_run, "error").items() if error} == {}


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_loses_no_acknowledged_write(short_run: dict[str, object]) -> None:
    # Each fault's first problems, so a failure says which writes and how.
    problems = by_fault(short_run, "problems")
    assert problems == {fault: [] for fault in problems}
    assert short_run["missing_or_wrong_outside_faults"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_answers_no_500(short_run: dict[str, object]) -> None:
    errors = by_fault(short_run, "http_500")
    assert errors == dict.fromkeys(errors, 0)


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_makes_no_conflict_with_itself(short_run: dict[str, object]) -> None:
    # What each conflict holds, so a failure shows how it came about.
    conflicts = by_fault(short_run, "conflicts")
    assert conflicts == {fault: [] for fault in conflicts}


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_says_why_in_every_503(short_run: dict[str, object]) -> None:
    bare = by_fault(short_run, "http_503_without_detail")
    assert bare == dict.fromkeys(bare, 0)


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_answers_within_the_bound(short_run: dict[str, object]) -> None:
    slow = by_fault(short_run, "over_budget")
    assert slow == dict.fromkeys(slow, 0)


@pytest.mark.slow
@pytest.mark.timeout(900)
@slice_holding("SQLite locked in an outage")
def test_short_chaos_run_answers_sqlite_locked_with_its_message(
    short_run: dict[str, object],
) -> None:
    details = by_fault(short_run, "details_503")["SQLite locked in an outage"]
    assert isinstance(details, dict)
    assert [detail for detail in details if "locked" in detail] != []


@pytest.mark.slow
@pytest.mark.timeout(900)
@EVERY_SLICE
def test_short_chaos_run_settles_back_on_postgres(short_run: dict[str, object]) -> None:
    assert short_run["settled"] is True


@pytest.mark.slow
@pytest.mark.timeout(900)
@slice_holding(RESTORES[0])
def test_short_chaos_run_writes_rows_back_into_a_restored_or_replaced_database(
    short_run: dict[str, object],
) -> None:
    written = by_fault(short_run, "written_back")
    assert {fault: bool(written[fault]) for fault in RESTORES} == dict.fromkeys(RESTORES, True)


@pytest.mark.slow
@pytest.mark.timeout(900)
@slice_holding("PostgreSQL disk full 10 s")
def test_short_chaos_run_names_the_full_disk_in_health(short_run: dict[str, object]) -> None:
    causes = by_fault(short_run, "state_cause")
    if "PostgreSQL disk full 10 s" not in causes:
        pytest.skip("mounting a small filesystem needs root")
    cause = str(causes["PostgreSQL disk full 10 s"])
    assert "probe: PostgreSQL cannot take writes: its disk is full (" in cause, cause
