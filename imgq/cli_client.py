"""`imgq submit`, `imgq status`, `imgq download` and `imgq ops`: the client side of the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from imgq.client import DEFAULT_URL, Client, Event, ImgqClientError, ImgqHTTPError, Item, Job

URL_ENV = "IMGQ_URL"
UrlOption = Annotated[str, typer.Option(
    "--url", envvar=URL_ENV, help=f"The imgq server [env {URL_ENV}].")]
KEY_ENV = "IMGQ_API_KEY"
KeyOption = Annotated[str | None, typer.Option(
    "--key", envvar=KEY_ENV, help=f"API key, for a server run with IMGQ_AUTH=keys [env {KEY_ENV}].",
    show_default=False)]
STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow",
                "expired": "dim", "running": "cyan", "queued": "blue", "partial": "yellow"}

out = Console()
err = Console(stderr=True)


def _fail(exc: ImgqClientError | Exception) -> typer.Exit:
    text = exc.message if isinstance(exc, ImgqHTTPError) else str(exc)
    err.print(f"[red]imgq:[/] {text}", highlight=False)
    return typer.Exit(2)


def submit(
    files: Annotated[list[Path], typer.Argument(
        exists=True, dir_okay=False, readable=True, help="Images to process.")],
    op: Annotated[str, typer.Option(
        "--op", "-p", help="The pipeline: 'resize:width=800|encode:format=webp' or JSON; "
        "see `imgq ops`.")],
    wait: Annotated[bool, typer.Option(help="Follow progress until the job finishes.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", file_okay=False, help="Download the results here (implies --wait).")] = None,
    zip_: Annotated[bool, typer.Option("--zip", help="Download one ZIP instead of files.")] = False,
    ttl: Annotated[int | None, typer.Option(help="Seconds the results are kept.")] = None,
    callback_url: Annotated[str | None, typer.Option(
        help="Webhook called when the job finishes.")] = None,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Submit images with a pipeline; with --wait, show a progress bar per image and a summary.
    Exit code 1 when an image failed or was cancelled."""
    try:
        with Client(url, api_key=key) as client:
            job = client.submit(files, op, ttl, callback_url)
            err.print(f"job [bold]{job.id}[/] · {len(job.items)} image(s) · "
                      f"{client.base_url}/jobs?ids={job.id}", highlight=False)
            if not (wait or output):
                out.print(job.id)
                return
            job = _follow(client, job)
            _summary(job)
            if output is not None:
                _download(client, job, output, zip_)
    except ImgqClientError as exc:
        raise _fail(exc) from None
    if any(i.status != "succeeded" for i in job.items):
        raise typer.Exit(1)


def _follow(client: Client, job: Job) -> Job:
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[stage]}"),
                  console=err, transient=False) as progress:
        tasks: dict[int, TaskID] = {
            i.index: progress.add_task(_short(i.name), total=100, stage=i.status)
            for i in job.items
        }

        def show(item: Item) -> None:
            stage = item.status if item.status != "running" else (item.stage or "running")
            progress.update(tasks[item.index], completed=item.progress, stage=stage)

        def on_event(event: Event) -> None:
            if event.event == "item":
                show(Item.from_json(event.data))
            elif event.event == "done":
                for item in Job.from_json(event.data).items:
                    show(item)

        return client.wait(job.id, on_event=on_event)


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _summary(job: Job) -> None:
    table = Table(title=f"job {job.id}: {job.status}", title_justify="left")
    for column in ("#", "file", "status", "result / error"):
        table.add_column(column)
    for item in job.items:
        style = STATUS_STYLE.get(item.status, "")
        detail = item.result_name if item.status == "succeeded" else item.error_message or ""
        table.add_row(str(item.index), item.name, f"[{style}]{item.status}[/]", detail or "")
    out.print(table)
    counts: dict[str, int] = {}
    for item in job.items:
        counts[item.status] = counts.get(item.status, 0) + 1
    out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _download(client: Client, job: Job, output: Path, as_zip: bool) -> None:
    if not any(i.result_url for i in job.items):
        err.print("nothing to download: no image succeeded")
        return
    output.mkdir(parents=True, exist_ok=True)
    if as_zip:
        paths = [client.download_archive(job.id, output)]
    else:
        paths = client.download_all(job.id, output)
    for path in paths:
        out.print(f"saved {path}", highlight=False)


def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Show a job and its images."""
    try:
        with Client(url, api_key=key) as client:
            job = client.get(job_id)
    except ImgqClientError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(job.raw))
        return
    _summary(job)
    out.print(f"expires at {job.expires_at}", highlight=False)


def download(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    output: Annotated[Path, typer.Option("--output", "-o", file_okay=False,
                                         help="Folder for the results.")] = Path("."),
    zip_: Annotated[bool, typer.Option("--zip", help="Download one ZIP instead of files.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """Download a job's finished results (or its ZIP) into a folder."""
    try:
        with Client(url, api_key=key) as client:
            _download(client, client.get(job_id), output, zip_)
    except ImgqClientError as exc:
        raise _fail(exc) from None


def ops(
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON schemas.")] = False,
    url: UrlOption = DEFAULT_URL,
    key: KeyOption = None,
) -> None:
    """List the server's operations and their parameters."""
    try:
        with Client(url, api_key=key) as client:
            operations = client.operations()
    except ImgqClientError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(operations))
        return
    for op in operations:
        flag = "" if op["available"] else f"  [yellow](unavailable: {op['unavailable_reason']})[/]"
        out.print(f"[bold]{op['name']}[/] [dim]{op['resource']}[/]  {op['summary']}{flag}",
                  highlight=False)
        for line in describe_params(op["params"]):
            out.print(f"    {line}", highlight=False, markup=False)


def describe_params(schema: dict[str, Any]) -> list[str]:
    """One line per parameter: name, type or choices, default, description."""
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(schema, prop)
        kind = _kind(schema, prop)
        default = f" = {json.dumps(prop['default'])}" if "default" in prop else ""
        need = " (required)" if name in required else ""
        desc = f"  {prop['description']}" if prop.get("description") else ""
        lines.append(f"{name}: {kind}{default}{need}{desc}")
    return lines


def _resolve(root: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if not ref:
        return prop
    target = root
    for part in ref.lstrip("#/").split("/"):
        target = target.get(part, {})
    return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}


def _kind(root: dict[str, Any], prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(str(v) for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [_kind(root, _resolve(root, p)) for p in prop["anyOf"]]
        return " or ".join(k for k in kinds if k != "null") + " (optional)"
    kind = str(prop.get("type", "any"))
    bounds = [f"{label}{prop[key]}" for key, label in
              (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
               ("exclusiveMaximum", "<")) if key in prop]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `imgq` command."""
    for command in (submit, status, download, ops):
        app.command(command.__name__)(command)
