"""``labguard``: see and fix a lab estate from a terminal, on the same core and ARM adapter as the Functions.

Exit status (:mod:`labguard.exit_codes`): 0 compliant; 1 a finding ``--fail-on`` selects (drift left in
audit, not converged in enforce, ...); 2 a usage or configuration error (one line on stderr says what to
do); 3 Azure could not be reached or kept failing; 130 interrupted (what was done is printed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from labguard import exit_codes, render, runner

EXIT_HELP = (
    "Exit status: 0 compliant; 1 findings (drift left, not converged, or what --fail-on selects); "
    "2 usage or configuration; 3 Azure unreachable or kept failing; 130 interrupted."
)

app = typer.Typer(
    name="labguard",
    help="Keep Azure Lab Services lab plans inside your school's baseline: audit, enforce, check the policy. "
    + EXIT_HELP,
    add_completion=False,
    rich_markup_mode=None,  # plain help: flags show as flags (rich help printed "--json <bool>")
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Subscriptions = Annotated[
    list[str] | None,
    typer.Option(
        "--subscription",
        "-s",
        metavar="ID",
        help="Subscription id in scope (repeatable or comma-separated); default LABGUARD_SUBSCRIPTIONS.",
        show_default=False,
    ),
]
ResourceGroups = Annotated[
    list[str] | None,
    typer.Option(
        "--resource-group",
        "-g",
        metavar="NAME",
        help="Only these resource groups (repeatable or comma-separated); default LABGUARD_RESOURCE_GROUPS.",
        show_default=False,
    ),
]
PolicyFile = Annotated[
    str | None,
    typer.Option(
        "--policy",
        "-p",
        metavar="FILE",
        help="Policy file; default LABGUARD_POLICY_FILE, else policy.yaml.",
        show_default=False,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of the table (the same as --format json).")
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        metavar="table|json|junit",
        help="table (for people), json (for scripts), junit (a test report for CI: one test case per plan, "
        "a failure per finding).",
    ),
]
FailOn = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-on",
        metavar="FINDINGS",
        help="Which findings make the exit status 1 (comma-separated or repeated): "
        + ", ".join(exit_codes.FAIL_ON_CHOICES)
        + ", all or none. Default: "
        + ",".join(exit_codes.DEFAULT_FAIL_ON)
        + ".",
        show_default=False,
    ),
]
AllowEmpty = Annotated[
    bool,
    typer.Option("--allow-empty", help="A subscription or resource group with no lab plans is fine (not exit 1)."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Also print labguard's structured log records.")]
FORMATS = ("table", "json", "junit")


def _err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    _err().print(f"[bold red]labguard:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def quiet_logs(verbose: bool) -> Iterator[None]:
    """labguard's records and the Azure SDK's warnings stay off the terminal unless --verbose."""
    names = ("labguard", "azure", "asyncio")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.propagate, list(lg.handlers), lg.level) for lg in loggers]
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.NullHandler()
    for logger in loggers:
        logger.handlers = [handler]
        logger.propagate = False
    logging.getLogger("labguard").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, propagate, handlers, level in saved:
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)


def _flags(subscription: list[str] | None, resource_group: list[str] | None, policy: str | None) -> runner.Flags:
    return runner.Flags(subscriptions=subscription, resource_groups=resource_group, policy=policy)


def sweep(
    command: Literal["audit", "enforce"],
    flags: runner.Flags,
    *,
    dry_run: bool,
    as_json: bool,
    verbose: bool,
    env: Mapping[str, str] | None = None,
    out: Console | None = None,
    credential: Any = None,
    err: Console | None = None,
    fail_on: frozenset[str] | None = None,
    output: str = "table",
    ask: bool = False,
    results: list[runner.RunResult] | None = None,
) -> int:
    """Run ``audit`` or ``enforce`` and print it; returns the exit code. Raises ConfigError.

    ``ask``: enforce shows the patches first (a dry run) and sends them only if the admin says yes.
    """
    env = os.environ if env is None else env
    out = out or render.console()
    err = err or Console(file=sys.stderr)
    if as_json:
        output = "json"
    as_json = output != "table"  # json and junit: no header, no progress bar, one document on stdout
    settings = runner.resolve_settings(env, flags, mode=command)
    runner.require_scope(settings)
    policy, functions_mode = runner.read_run_policy(settings, command, env)
    if ask and command == "enforce" and not dry_run and as_json:
        raise runner.ConfigError(
            f"enforce --format {output} on a terminal would send patches without showing them first: "
            "add --yes to send them, or --dry-run to see them"
        )
    approved: dict[str, Mapping[str, Any]] | None = None  # set once a person approved a preview
    if ask and command == "enforce" and not dry_run:
        previews: list[runner.RunResult] = []
        preview = sweep(
            command,
            flags,
            dry_run=True,
            as_json=False,
            verbose=verbose,
            env=env,
            out=out,
            credential=credential,
            err=err,
            fail_on=fail_on,
            results=previews,
        )
        if preview in (exit_codes.USAGE, exit_codes.AZURE_UNAVAILABLE, exit_codes.INTERRUPTED):
            return preview
        lab_patches = {
            lab.plan_id: lab.lab.patch
            for lab in (previews[0].labs if previews else [])
            if lab.status == "drifted" and lab.lab is not None and lab.lab.patch
        }
        if not previews or not (previews[0].counts["drifted"] or lab_patches):
            out.print("Nothing to send.")
            return preview
        out.print()
        if not typer.confirm(
            "Send these patches now? (each plan and lab is read again right before its write)", default=False
        ):
            out.print("Nothing sent.")
            return preview
        out.print()
        # Only what was shown is sent: a plan or lab whose patch differs when it is read again is left alone.
        approved = {
            item.outcome.plan_id: item.outcome.evaluation.patch
            for item in previews[0].results
            if item.status == "drifted" and item.outcome.evaluation is not None and item.outcome.evaluation.patch
        }
        approved.update(lab_patches)
    configured = runner.configured_scope(env)
    header = runner.RunResult(command, dry_run, settings, policy, functions_mode=functions_mode, configured=configured)
    header_shown = False

    def show_header() -> None:  # once the run is under way: a configuration error prints nothing else
        nonlocal header_shown
        if not as_json and not header_shown:
            header_shown = True
            render.print_header(out, header)

    streaming = command == "enforce" and not as_json

    async def go() -> runner.RunResult:
        progress: Progress | None = None
        if err.is_terminal and not as_json:  # a progress bar for people watching, never in pipes or CI logs
            progress = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed} plans"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            task = progress.add_task(f"{command}: sweeping", total=None)
            progress.start()
        # Changes scroll above the bar when both share the screen; a redirected stdout gets them as is.
        printer = progress.console if progress is not None and out.is_terminal else out

        def on_result(item: runner.PlanResult) -> None:
            if progress is not None:
                progress.advance(task)
            if streaming:
                line = render.change_line(item, dry_run=dry_run)
                if line is not None:
                    show_header()
                    printer.print(line, soft_wrap=True)

        def on_lab(outcome: Any) -> None:
            if streaming:
                line = render.lab_change_line(outcome, dry_run=dry_run)
                if line is not None:
                    show_header()
                    printer.print(line, soft_wrap=True)

        try:
            return await runner.run(
                settings,
                policy,
                command=command,
                dry_run=dry_run,
                on_result=on_result,
                on_lab=on_lab,
                credential=credential,
                fail_on=fail_on,
                handle_interrupt=True,
                functions_mode=functions_mode,
                approved_patches=approved,
            )
        finally:
            if progress is not None:
                progress.stop()

    with quiet_logs(verbose):
        result: runner.RunResult = asyncio.run(go())
    result.configured = configured
    if results is not None:
        results.append(result)
    if output == "junit":
        from labguard.junit import run_junit

        out.file.write(run_junit(result))
    elif as_json:
        out.file.write(json.dumps(render.run_json(result), indent=2, ensure_ascii=False) + "\n")
    else:
        show_header()
        lab_lines = any(render.lab_change_line(lab, dry_run=dry_run) for lab in result.labs)
        if streaming and (result.counts["fixed"] or result.counts["drifted"] or lab_lines):
            out.print()
        render.print_run(out, result, changes_shown=streaming, header=False)
    return result.exit_code


def audit_files(
    paths: list[str], flags: runner.Flags, *, now: str | None, as_json: bool, env: Mapping[str, str] | None = None
) -> int:
    """``audit --from-file``: the same report as a sweep, over saved plan JSON. Raises ConfigError."""
    from datetime import UTC, datetime

    settings = runner.resolve_settings(os.environ if env is None else env, flags, mode="audit")
    policy = runner.read_policy(settings.policy_file, settings.mode_override)
    try:
        when = datetime.fromisoformat(now) if now else datetime.now(UTC)
    except ValueError:
        raise runner.ConfigError(f"--now {now!r} is not an ISO date/time such as 2025-07-31T12:00:00Z") from None
    result = runner.evaluate_files(paths, settings, policy, when)
    out = render.console()
    if as_json:
        out.file.write(json.dumps(render.run_json(result), indent=2, ensure_ascii=False) + "\n")
    else:
        render.print_run(out, result)
    return result.exit_code


def _guard(body: Callable[[], int]) -> None:
    try:
        code = body()
    except runner.ConfigError as exc:
        raise fail(str(exc), exc.code) from None
    except exit_codes.FailOnError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:  # before the sweep started: nothing was sent
        raise fail("interrupted before anything was sent", exit_codes.INTERRUPTED) from None
    raise typer.Exit(code)


def _output(output: str) -> str:
    value = output.strip().lower()
    if value not in FORMATS:
        raise runner.ConfigError(f"--format {output!r}: write table, json or junit")
    return value


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("labguard")
        except PackageNotFoundError:  # a checkout run without `pip install`
            number = "(not installed)"
        typer.echo(f"labguard {number}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print labguard's version and exit."),
    ] = False,
) -> None:
    """Keep Azure Lab Services lab plans inside your school's baseline: audit, enforce, check the policy."""


@app.command(epilog=EXIT_HELP)
def audit(
    subscription: Subscriptions = None,
    resource_group: ResourceGroups = None,
    policy: PolicyFile = None,
    as_json: AsJson = False,
    output: Format = "table",
    fail_on: FailOn = None,
    allow_empty: AllowEmpty = False,
    verbose: Verbose = False,
    from_file: Annotated[
        list[str] | None,
        typer.Option(
            "--from-file",
            metavar="FILE",
            help="Evaluate saved lab plan JSON (a list, {value: [...]} or one body) instead of Azure (repeatable).",
            show_default=False,
        ),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option("--now", metavar="WHEN", help="With --from-file: evaluate as of this ISO date/time.", hidden=True),
    ] = None,
) -> None:
    """Report every plan in scope against the policy; change nothing."""
    if from_file:
        _guard(lambda: audit_files(from_file, _flags(subscription, resource_group, policy), now=now, as_json=as_json))
        return
    _guard(
        lambda: sweep(
            "audit",
            _flags(subscription, resource_group, policy),
            dry_run=False,
            as_json=as_json,
            verbose=verbose,
            output=_output(output),
            fail_on=exit_codes.parse_fail_on(fail_on, allow_empty=allow_empty),
        )
    )


@app.command(epilog=EXIT_HELP)
def enforce(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the patches without sending them.")] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Send without asking. On a terminal enforce first shows the patches and asks; when stdin or "
            "stdout is not a terminal (a pipe, cron, CI) it never asks and sends them.",
        ),
    ] = False,
    subscription: Subscriptions = None,
    resource_group: ResourceGroups = None,
    policy: PolicyFile = None,
    as_json: AsJson = False,
    output: Format = "table",
    fail_on: FailOn = None,
    allow_empty: AllowEmpty = False,
    verbose: Verbose = False,
) -> None:
    """Send each drifted plan its minimal patch (only ever tightening) and show every change.

    Ctrl-C stops cleanly: no new patch is sent, the ones in flight finish (a second Ctrl-C stops
    waiting), and labguard prints what was changed, what was in flight and what was not reached.
    """
    _guard(
        lambda: sweep(
            "enforce",
            _flags(subscription, resource_group, policy),
            dry_run=dry_run,
            as_json=as_json,
            verbose=verbose,
            output=_output(output),
            fail_on=exit_codes.parse_fail_on(fail_on, allow_empty=allow_empty),
            ask=not yes and sys.stdin.isatty() and sys.stdout.isatty(),
        )
    )


@app.command("check-policy")
def check_policy(
    file: Annotated[
        str | None,
        typer.Argument(help="Policy file; default LABGUARD_POLICY_FILE, else policy.yaml.", show_default=False),
    ] = None,
    subscription: Subscriptions = None,
    resource_group: ResourceGroups = None,
    as_json: AsJson = False,
    write_schema: Annotated[
        str | None,
        typer.Option(
            "--write-schema",
            metavar="PATH",
            help="Write the policy file's JSON Schema (policy.schema.json) to PATH instead.",
            show_default=False,
        ),
    ] = None,
    write_checked: Annotated[
        bool,
        typer.Option(
            "--write-checked",
            help="Also write the checked copy beside a valid policy (<file>.checked.json): new instances of the "
            "app load it without validating again. Run it after each edit and deploy both files.",
        ),
    ] = False,
) -> None:
    """Validate a policy file and print the effective rules per scope; warn about overrides outside the scope
    (from -s/-g, else LABGUARD_SUBSCRIPTIONS / LABGUARD_RESOURCE_GROUPS). Exit 0 valid, 2 invalid."""

    def body() -> int:
        if write_schema:
            from shared.core.policy import schema_text

            try:
                with open(write_schema, "w", encoding="utf-8") as handle:
                    handle.write(schema_text())
            except OSError as exc:
                raise runner.ConfigError(f"cannot write the schema to {write_schema}: {exc.strerror or exc}") from None
            return 0
        path = runner.policy_path(file, os.environ.get("LABGUARD_POLICY_FILE", "").strip() or None)
        policy = runner.read_policy(path, hint="")
        settings = runner.resolve_settings(os.environ, runner.Flags(subscription, resource_group, str(path)))
        warnings = runner.unused_overrides(policy, settings)
        out = render.console()
        if write_checked:
            from shared.core.policy_check import write_checked_copy

            try:
                written = write_checked_copy(path)
            except OSError as exc:
                raise runner.ConfigError(
                    f"cannot write the checked copy beside {path}: {exc.strerror or exc}"
                ) from None
            (render.console(sys.stderr) if as_json else out).print(f"wrote {written}", soft_wrap=True)
        if as_json:
            document = render.policy_json(policy)
            document["unusedOverrides"] = warnings
            out.file.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        else:
            render.print_policy(out, policy)
            for line in warnings:
                out.print(f"warning: {line}", style="yellow", soft_wrap=True)
        return 0

    _guard(body)


@app.command()
def doctor(
    subscription: Subscriptions = None,
    resource_group: ResourceGroups = None,
    live: Annotated[
        str | None,
        typer.Option(
            "--live",
            metavar="RG",
            help="Also create a throwaway lab plan in this resource group (first subscription); PATCH, read, delete.",
            show_default=False,
        ),
    ] = None,
    location: Annotated[
        str | None,
        typer.Option(
            metavar="REGION",
            help="Region of the throwaway plan; default that of a plan found in scope.",
            show_default=False,
        ),
    ] = None,
    policy: PolicyFile = None,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Check credential, roles, provider, plans and policy (--live: how the service writes) before enforce."""
    from labguard.doctor import command

    def body() -> int:
        with quiet_logs(verbose):
            return command(
                _flags(subscription, resource_group, policy),
                live_group=live,
                location=location,
                as_json=as_json,
                env=os.environ,
            )

    _guard(body)


@app.command()
def report(
    html_file: Annotated[str, typer.Option("--html", metavar="FILE", help="Write the compliance page here.")],
    snapshot_file: Annotated[
        str | None,
        typer.Option("--snapshot", metavar="FILE", help="Also write the JSON snapshot the page shows."),
    ] = None,
    subscription: Subscriptions = None,
    resource_group: ResourceGroups = None,
    policy: PolicyFile = None,
    verbose: Verbose = False,
) -> None:
    """Audit (change nothing) and write the compliance page: one self-contained HTML file. Exit 0 written, 2 error."""
    from labguard.report_cmd import write_report

    def body() -> int:
        with quiet_logs(verbose):
            snapshot, files = write_report(_flags(subscription, resource_group, policy), html_file, snapshot_file)
        totals = snapshot["totals"]
        counts = ", ".join(f"{totals[k]} {k}" for k in totals if k != "plans" and totals[k])
        labs = snapshot.get("labTotals") or {}
        if labs.get("labs"):
            counts += f"; {labs['labs']} labs: " + ", ".join(f"{labs[k]} {k}" for k in labs if k != "labs" and labs[k])
        _err().print(f"labguard: wrote {', '.join(map(str, files))} ({totals['plans']} plans: {counts or 'none'})")
        return 0

    _guard(body)


def main() -> None:
    """The ``labguard`` console script."""
    app(prog_name="labguard")


if __name__ == "__main__":
    main()
