"""trainer-agent: turn a plain-language request and a dataset into a live model endpoint.

Commands talk to the gateway over gRPC (``--gateway`` or TRAINERAGENT_GATEWAY; by default the
embedded stack under ``.trainer-agent/``, which ``run`` starts when none is up).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Callable

import grpc
from rich.console import Console

from cli.client import GatewayClient, default_gateway, is_uploadable
from cli.launcher import Stack, StackError, stack_from_env
from cli.progress import ProgressView, render_job, state_name
from services.common.jsonfmt import message_to_json
from traineragent.v1 import common_pb2

STATE_DIR_ENV = "TRAINERAGENT_STATE_DIR"


def state_dir(args: argparse.Namespace) -> pathlib.Path:
    return pathlib.Path(args.state_dir or os.environ.get(STATE_DIR_ENV, ".trainer-agent")).resolve()


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Cli:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        # With --json stdout holds the one JSON object; everything for people goes to stderr.
        self.out = self.err if getattr(args, "json", False) else Console(highlight=False, soft_wrap=True)

    def gateway_address(self, start: bool) -> str:
        if self.args.gateway:
            return self.args.gateway
        directory = state_dir(self.args)
        stack = Stack.load(directory)
        if stack is not None and stack.healthy():
            return stack.gateway
        if not start:
            raise StackError("no TrainerAgent stack is running: start one with `trainer-agent up` "
                             "(or pass --gateway HOST:PORT)")
        if stack is not None:
            stack.stop()
        self.err.print(f"Starting the embedded stack (state in {directory}) ...")
        stack = stack_from_env(directory)
        stack.start()
        self.err.print(f"Stack up: gateway {stack.gateway}, logs in {directory / 'logs'}")
        return stack.gateway

    def client(self, start: bool = False) -> GatewayClient:
        return GatewayClient(self.gateway_address(start), api_key=self.args.api_key)

    # --- stack ---------------------------------------------------------------------------------------

    def up(self) -> int:
        directory = state_dir(self.args)
        existing = Stack.load(directory)
        if existing is not None and existing.healthy():
            self.out.print(f"Already up: gateway {existing.gateway}")
            return 0
        if existing is not None:
            existing.stop()
        stack = stack_from_env(directory)
        if self.args.workers:
            stack.workers = self.args.workers
        stack.start()
        self.out.print(f"TrainerAgent is up: gateway {stack.gateway}, NATS 127.0.0.1:{stack.ports['nats']}, "
                       f"logs in {directory / 'logs'}. Stop it with `trainer-agent down`.")
        return 0

    def down(self) -> int:
        stack = Stack.load(state_dir(self.args))
        if stack is None:
            self.out.print("Nothing to stop: no stack is recorded in " + str(state_dir(self.args)))
            return 0
        stopped = stack.stop()
        self.out.print(f"Stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0

    # --- jobs ---------------------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        if not args.data and not args.server_path:
            raise UsageError("say where the data is: --data PATH (a local folder, archive or data file) or --server-path PATH")
        dataset = common_pb2.DatasetRef()
        if args.data:
            path = pathlib.Path(args.data).expanduser()
            if not path.exists():
                raise UsageError(f"--data {args.data}: no such file or folder")
            if not is_uploadable(path):
                raise UsageError(f"--data {args.data}: give a folder, a .zip/.tar/.tar.gz archive or a data file "
                                 "(.csv, .tsv, .jsonl, .json, .parquet)")
        client = self.client(start=True)
        if args.data:
            self.err.print(f"Uploading {path} ...")
            upload = client.upload(path)
            self.err.print(f"Uploaded {upload.size_bytes / 1e6:.2f} MB, {upload.num_files} files")
            dataset.upload_id = upload.upload_id
        else:
            dataset.server_path = args.server_path
        options = common_pb2.JobOptions(deployment_name=args.name or "")
        if args.max_train_minutes is not None:
            options.max_train_minutes = args.max_train_minutes
        job = client.submit(args.request, dataset, options)
        self.err.print(f"Job {job.job_id} submitted")
        return self._follow(client, job.job_id)

    def _follow(self, client: GatewayClient, job_id: str) -> int:
        with ProgressView(self.err) as view:
            for event in client.watch(job_id):
                view.handle(event)
                if event.kind == common_pb2.EVENT_KIND_STATE_CHANGED and event.state == common_pb2.JOB_STATE_NEEDS_INPUT:
                    break
        job = client.get_job(job_id)
        if self.args.json:
            print_json(message_to_json(job))
        else:
            render_job(job, self.out)
        return 0 if job.state == common_pb2.JOB_STATE_SUCCEEDED else 1

    def watch(self) -> int:
        return self._follow(self.client(), self.args.job_id)

    def jobs(self) -> int:
        jobs = self.client().list_jobs()
        if self.args.json:
            print_json([message_to_json(j) for j in jobs])
            return 0
        if not jobs:
            self.out.print("No jobs yet: `trainer-agent run \"REQUEST\" --data PATH` starts one")
        for j in jobs:
            accuracy = j.model_report.test_metrics.get("accuracy")
            extra = f" test accuracy {accuracy:.4f}" if accuracy is not None else ""
            self.out.print(f"{j.job_id}  {state_name(j.state):<11} {j.created_at.ToJsonString()[:19]}  "
                           f"{j.request[:60]!r}{extra}", markup=False)
        return 0

    def status(self) -> int:
        if not self.args.job_id:
            stack = Stack.load(state_dir(self.args))
            if stack is None:
                self.out.print("No embedded stack recorded; `trainer-agent up` starts one")
                return 1
            running = stack.running()
            if self.args.json:
                print_json({"gateway": stack.gateway, "ports": stack.ports, "processes": running})
            else:
                for name, alive in running.items():
                    self.out.print(f"{name:<8} {'running' if alive else 'STOPPED'}  pid {stack.pids[name]}")
            return 0 if all(running.values()) else 1
        job = self.client().get_job(self.args.job_id)
        if self.args.json:
            print_json(message_to_json(job))
        else:
            render_job(job, self.out)
        return 0

    def reply(self) -> int:
        answers = {}
        for item in self.args.answers:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"answer {item!r} is not ID=TEXT (e.g. task_type=image_classification)")
            answers[key.strip()] = value.strip()
        client = self.client()
        client.reply(self.args.job_id, answers)
        return self._follow(client, self.args.job_id)

    def cancel(self) -> int:
        job = self.client().cancel(self.args.job_id)
        self.out.print(f"Job {job.job_id}: {state_name(job.state)}")
        return 0

    def deployments(self) -> int:
        deployments = self.client().deployments()
        if self.args.json:
            print_json([message_to_json(d) for d in deployments])
            return 0
        if not deployments:
            self.out.print("No deployments")
        for d in deployments:
            self.out.print(f"{d.name:<24} {d.status:<8} {d.endpoint:<22} job {d.job_id}  "
                           f"p95 {d.latency_ms.p95:.2f} ms  classes {len(d.classes)}")
        return 0

    def undeploy(self) -> int:
        deployment = self.client().undeploy(self.args.name)
        self.out.print(f"Stopped and removed {deployment.name} ({deployment.endpoint})")
        return 0

    def export(self) -> int:
        out = pathlib.Path(self.args.out)
        files = self.client().download_model(self.args.job_id, out)
        for f in files:
            self.out.print(f"wrote {f} ({f.stat().st_size} bytes)")
        return 0

    def predict(self) -> int:
        """Send images (FILES), texts (--text) or table rows (--row / --csv) to a deployment's endpoint."""
        from cli import predict

        given = [bool(self.args.files), bool(self.args.text), bool(self.args.row or self.args.csv)]
        if sum(given) != 1:
            raise UsageError("give image FILES, or --text \"...\" (repeatable) for a text endpoint, or "
                             "--row '{\"column\": value, ...}' (repeatable) / --csv FILE for a table endpoint")
        deployments = {d.name: d for d in self.client().deployments()}
        if self.args.name not in deployments:
            raise StackError(f"no deployment named {self.args.name!r}; deployed: {', '.join(deployments) or 'none'}")
        deployment = deployments[self.args.name]
        try:
            if self.args.files:
                results = predict.predict_files(deployment, [pathlib.Path(f) for f in self.args.files])
                names = [r["file"] for r in results]
            elif self.args.text:
                results = predict.predict_texts(deployment, self.args.text)
                names = [r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..." for r in results]
            else:
                rows = predict.parse_rows(self.args.row or [])
                if self.args.csv:
                    rows += predict.read_csv_rows(pathlib.Path(self.args.csv))
                results = predict.predict_rows(deployment, rows, ignore_extra=bool(self.args.csv))
                names = [f"row {r['row']}" for r in results]
        except predict.PredictError as exc:
            raise UsageError(str(exc)) from None
        if self.args.json:
            print_json(results)
            return 0
        for name, r in zip(names, results, strict=True):
            if "prediction" in r:
                self.out.print(f"{name}: {r['prediction']:.6g}", markup=False)
            else:
                top = ", ".join(f"{k} {v:.3f}" for k, v in r["top"])
                self.out.print(f"{name}: {r['label']}  ({top})", markup=False)
        return 0

    def plan(self) -> int:
        """Read requests into TaskSpecs: one (TEXT) or a JSONL file of {"id", "text"} lines (--file)."""
        if bool(self.args.text) == bool(self.args.file):
            raise UsageError('give a request TEXT or --file requests.jsonl (lines {"id": ..., "text": ...})')
        planner = self._planner()
        if self.args.text:
            spec = planner(self.args.text)
            if self.args.json:
                print_json(spec)
            else:
                self.out.print_json(json.dumps(spec, ensure_ascii=False))
            return 0
        for number, line in enumerate(_read_lines(self.args.file), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                text, item_id = item["text"], item.get("id", number)
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{self.args.file} line {number} is not {{\"id\": ..., \"text\": ...}}: {exc}") from exc
            row = {"id": item_id, **plan_row(planner(text))}
            if self.args.json:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                targets = ", ".join(f"{t['metric']} {t['op']} {t['value']:g}" for t in row["targets"])
                self.out.print(f"{item_id}: {row['decision']} {row['reject_reason'] or row['task_type'] or ''} "
                               f"{targets}", markup=False)
        sys.stdout.flush()
        return 0

    def _planner(self) -> Callable[[str], dict]:
        """PlanTask on the running stack when there is one, else the Task agent's own code in-process."""
        brain_name = self.args.brain or ""
        if self.args.gateway or self._stack_up():
            client = self.client()
            return lambda text: message_to_json(client.plan(text, brain_name))
        from services.common.config import Settings
        from services.task.brain import read_request

        settings = Settings.from_env()
        return lambda text: message_to_json(read_request(text, settings, brain_name))

    def _stack_up(self) -> bool:
        stack = Stack.load(state_dir(self.args))
        return stack is not None and stack.healthy(timeout_s=1.0)


class UsageError(Exception):
    pass


PLAN_KEYS = ("decision", "reject_reason", "task_type", "targets", "labels", "label_column", "input_columns",
             "questions", "explanation", "brain", "fallback_reason")


def plan_row(spec: dict) -> dict:
    """One `plan --file --json` line: the TaskSpec's fields with constraints always spelled out."""
    row = {key: spec.get(key) for key in PLAN_KEYS}
    constraints = spec.get("constraints") or {}
    row["constraints"] = {key: constraints.get(key) for key in ("max_latency_ms", "max_model_size_mb",
                                                                 "max_train_minutes")}
    return row


def _read_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    file = pathlib.Path(path)
    if not file.exists():
        raise UsageError(f"--file {path}: no such file")
    return file.read_text(encoding="utf-8").splitlines()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer-agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default=default_gateway(), help="gateway HOST:PORT (default: the embedded stack)")
    parser.add_argument("--api-key", default=os.environ.get("TRAINERAGENT_API_KEY"), help="API key for the gateway")
    parser.add_argument("--state-dir", default=None, help="the embedded stack's folder (default .trainer-agent)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[Cli], int], help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        return p

    p = command("up", Cli.up, "start the embedded stack (NATS, every service, training workers)", json_flag=False)
    p.add_argument("--workers", type=int, default=None, help="training workers to start (default 1, or TRAINERAGENT_WORKERS)")
    command("down", Cli.down, "stop the embedded stack", json_flag=False)
    p = command("run", Cli.run, "submit a request with its data and follow it until the endpoint is live")
    p.add_argument("request", help='what you want, e.g. "Recognise handwritten digits, at least 97%% accuracy"')
    p.add_argument("--data", help="a local folder (one sub-folder per class) or archive; it is uploaded")
    p.add_argument("--server-path", help="data already on the server's host, under its allowed roots")
    p.add_argument("--name", help="the deployment's name (default derived from the job)")
    p.add_argument("--max-train-minutes", type=float, default=None, help="training budget in minutes")
    command("jobs", Cli.jobs, "list jobs")
    p = command("status", Cli.status, "a job's record (or, with no job, the embedded stack's processes)")
    p.add_argument("job_id", nargs="?")
    p = command("watch", Cli.watch, "follow a job's events from the start")
    p.add_argument("job_id")
    p = command("reply", Cli.reply, "answer a job's questions: reply JOB id=answer ...")
    p.add_argument("job_id")
    p.add_argument("answers", nargs="+")
    p = command("cancel", Cli.cancel, "cancel a job", json_flag=False)
    p.add_argument("job_id")
    command("deployments", Cli.deployments, "list live endpoints")
    p = command("undeploy", Cli.undeploy, "stop an endpoint and remove it", json_flag=False)
    p.add_argument("name")
    p = command("export", Cli.export, "write a job's ONNX model, preprocessing, classes and report to a folder",
                json_flag=False)
    p.add_argument("job_id")
    p.add_argument("--out", required=True)
    p = command("predict", Cli.predict, "send images, texts or table rows to a deployment's endpoint and print "
                "its answers")
    p.add_argument("name")
    p.add_argument("files", nargs="*", help="image files (image endpoints)")
    p.add_argument("--text", action="append", help="a text to classify (text endpoints; repeatable)")
    p.add_argument("--row", action="append", help='a table row as JSON, {"column": value, ...} (table endpoints; '
                   "repeatable; null or \"\" for a missing value)")
    p.add_argument("--csv", help="a CSV (or .tsv) file of table rows; columns the model does not read are ignored")
    p = command("plan", Cli.plan, "read requests into TaskSpecs without running them (works without a stack)")
    p.add_argument("text", nargs="?", help="the request")
    p.add_argument("--file", help='a JSONL file of {"id": ..., "text": ...} lines ("-" for stdin)')
    p.add_argument("--brain", choices=["rules", "llm"], default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli = Cli(args)
    try:
        return args.handler(cli)
    except UsageError as exc:
        cli.err.print(f"[red]error:[/red] {exc}")
        return 2
    except StackError as exc:
        cli.err.print(f"[red]error:[/red] {exc}")
        return 1
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == "UNAVAILABLE":
            details = f"cannot reach the gateway ({details}); is the stack up? `trainer-agent up`"
        cli.err.print(f"[red]error ({code}):[/red] {details}", markup=True)
        return 1
    except KeyboardInterrupt:
        cli.err.print("interrupted; the job keeps running (`trainer-agent watch JOB` to follow it again)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
