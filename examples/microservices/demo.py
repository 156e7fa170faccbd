"""One command: three services share one notary, and two host notaries are notarized by a central one.

    .venv/bin/python -m examples.microservices.demo [--workdir DIR]

It starts a dev stack and three daemons on 127.0.0.1 (stopped at the end):
``host-a`` (sources ``orders``, ``payments``, ``shipping``), ``host-b``
(source ``inventory``) and ``central`` (sources ``host-a``, ``host-b``).

1. One log, many services: the three services of host-a run as separate
   processes, each with its own token, writing their audit events through a
   fail-closed NotaryHandler; inventory does the same on host-b. Each
   service's audit log verifies CLEAN with ``notary verify-log --source
   <service>``, and one record of each verifies with ``notary verify``, which
   names the service as the entry's source.
2. The hierarchy: ``notary forward-seals`` submits each host's anchored seals
   (SHA-256 of the seal JSON) to the central notary under the host's token;
   ``notary chain-proof`` gathers, for one record of each service, the proof
   chain record -> host log -> host seal -> central log, and ``notary
   verify-chain`` verifies it offline. A copy of one chain with the host seal
   altered outside its checkpoint must fail verification.

Exit status 0 when every check came out as expected; ``result.json`` in the
work directory lists them, and the chain files stay there (``chains/``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from examples.devnotary import ExampleStack, Notary, example_parser, make_workdir, wait_anchored
from notary.client import HttpClient, line_digests

HOSTS = {"host-a": ["orders", "payments", "shipping"], "host-b": ["inventory"]}
EVENTS = 8  # audit events per service


def notary_cli(*args: str) -> tuple[int, str]:
    """Run ``notary ARGS`` as a person would; print the command (long arguments cut) and what it said
    (of a --json answer, its verdict)."""
    print("$ notary " + " ".join(shlex.quote(a if len(a) <= 60 else a[:57] + "...") for a in args))
    done = subprocess.run([sys.executable, "-m", "notary.cli", *args], capture_output=True, text=True)
    shown = json.loads(done.stdout)["verdict"] + "\n" if "--json" in args and done.stdout else done.stdout
    print(shown + done.stderr, end="")
    return done.returncode, done.stdout


def run_services(host: Notary, services: list[str], workdir: Path) -> dict[str, Path]:
    """Start every service of a host as its own process, all at once; wait for all; return their audit logs."""
    sinks = {name: workdir / f"{name}.audit.jsonl" for name in services}
    processes = {
        name: subprocess.Popen([sys.executable, "-m", "examples.microservices.service", "--name", name,
                                "--url", host.url, "--token-file", str(host.token_files[name]),
                                "--sink", str(sinks[name]), "--events", str(EVENTS)])
        for name in services}
    for name, process in processes.items():
        if process.wait(120) != 0:
            raise SystemExit(f"demo: service {name} exited with status {process.returncode}")
    return sinks


def last_index(host: Notary, sinks: dict[str, Path]) -> int:
    last = [digest for path in sinks.values() for _, digest in line_digests(path)][-len(sinks):]
    return max(max(hits) for hits in HttpClient(host.url).lookup(last)["indices"])


def one_log(host: Notary, sinks: dict[str, Path], workdir: Path) -> dict:
    """Part 1 for one host: each service's log CLEAN under its own source, one record per service proven."""
    checks = {}
    for name, sink in sinks.items():
        code, _ = notary_cli("verify-log", str(sink), "--source", name, "--dev-json", str(host.dev_json))
        first = sink.read_text().split("\n", 1)[0]
        proof = workdir / f"{name}.tlog-proof"
        notary_cli("proof", "--url", host.url, "--line", first, "-o", str(proof))
        verify_code, out = notary_cli("verify", str(proof), "--line", first, "--dev-json", str(host.dev_json),
                                      "--json")
        source = json.loads(out)["source"] if out else None
        checks[name] = {"verify_log": code, "verify": verify_code, "proof_source": source}
    counts: dict[str, int] = {}
    size = HttpClient(host.url).anchored_size()
    for line in HttpClient(host.url).entries(0, size).splitlines():
        source = line.split(" ", 2)[2]
        counts[source] = counts.get(source, 0) + 1
    return {"services": checks, "entries_per_source": counts}


def hierarchy(hosts: dict[str, Notary], central: Notary, sinks: dict[str, dict[str, Path]], workdir: Path) -> dict:
    """Part 2: forward the hosts' seals, then build and verify one chain per service."""
    forwarded = []
    for name, host in hosts.items():
        _, out = notary_cli("forward-seals", "--from", host.url, "--to", central.url,
                            "--token-file", str(central.token_files[name]), "--source", name)
        forwarded += [int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if " -> central index " in line]
    if not forwarded:
        raise SystemExit("demo: no seal was forwarded")
    wait_anchored(HttpClient(central.url), max(forwarded))
    # Stateless and idempotent: run again, it finds every seal already in the central log and sends none.
    _, again = notary_cli("forward-seals", "--from", hosts["host-a"].url, "--to", central.url,
                          "--token-file", str(central.token_files["host-a"]), "--source", "host-a")
    info = json.loads(central.dev_json.read_text())
    trust = [f"--host-vkey={k}" for k in info["vkeys"]] + [f"--central-vkey={k}" for k in info["vkeys"]]
    chains_dir = workdir / "chains"
    chains_dir.mkdir(exist_ok=True)
    results = {}
    for host_name, services in sinks.items():
        for name, sink in services.items():
            line = sink.read_text().split("\n", 1)[0]
            chain = chains_dir / f"{name}.chain.json"
            notary_cli("chain-proof", "--host", hosts[host_name].url, "--central", central.url,
                       "--host-source", host_name, "--line", line, "-o", str(chain))
            code, _ = notary_cli("verify-chain", str(chain), "--line", line, *trust, "--tsa-roots",
                                 info["tsa_roots"], "--host-source", host_name)
            results[name] = {"host": host_name, "chain": str(chain), "line": line, "verify_chain": code}
    # The host seal hashed into the central log is the S3 object, byte for byte, and locked.
    first = next(iter(results.values()))
    doc = json.loads(Path(first["chain"]).read_text())
    (chains_dir / "host.seal.json").write_text(doc["host_seal"])
    (chains_dir / "host.tlog-proof").write_text(doc["record_proof"])
    same_as_s3, _ = notary_cli("verify", str(chains_dir / "host.tlog-proof"), "--line", first["line"],
                               "--dev-json", str(hosts[first["host"]].dev_json), "--s3", "--prefix",
                               f"{first['host']}/", "--seal", str(chains_dir / "host.seal.json"))
    # An altered link: the host seal's sealed_at changed (outside the signed, time-stamped checkpoint).
    seal = json.loads(doc["host_seal"])
    seal["sealed_at"] = "2000-01-01T00:00:00.000000Z"
    doc["host_seal"] = json.dumps(seal, sort_keys=True, separators=(",", ":"))
    altered = chains_dir / "altered-host-seal.chain.json"
    altered.write_text(json.dumps(doc, indent=1) + "\n")
    code, _ = notary_cli("verify-chain", str(altered), "--line", first["line"], *trust, "--tsa-roots",
                         info["tsa_roots"], "--host-source", first["host"])
    return {"chains": results, "altered_host_seal": code, "host_seal_is_s3_object": same_as_s3, "forwarded_again": again.splitlines()[-1], "vkeys": info["vkeys"], "tsa_roots": info["tsa_roots"]}


def main(argv: list[str] | None = None) -> int:
    parser = example_parser("examples.microservices.demo", __doc__)
    args = parser.parse_args(argv)
    workdir = make_workdir(args.workdir, "microservices-")
    print(f"starting a dev stack and three notaries under {workdir / 'notary'} ...")
    with ExampleStack(workdir / "notary") as stack:
        central = stack.notary("central", list(HOSTS))
        hosts = {name: stack.notary(name, services) for name, services in HOSTS.items()}
        sinks, logs = {}, {}
        for name, services in HOSTS.items():
            print(f"\n1. {', '.join(services)}: separate processes, each with its own token, submitting to {name}")
            sinks[name] = run_services(hosts[name], services, workdir)
            wait_anchored(HttpClient(hosts[name].url), last_index(hosts[name], sinks[name]))
            logs[name] = one_log(hosts[name], sinks[name], workdir)
            print(f"{name}: entries per source: {logs[name]['entries_per_source']}")
        print("\n2. the hierarchy: host seals notarized by the central notary")
        chains = hierarchy(hosts, central, sinks, workdir)
    result = {"logs": logs, **chains}
    result["ok"] = (
        all(c == {"verify_log": 0, "verify": 0, "proof_source": name}
            for log in logs.values() for name, c in log["services"].items())
        and all(log["entries_per_source"].get(name) == EVENTS for host, log in logs.items() for name in HOSTS[host])
        and all(c["verify_chain"] == 0 for c in chains["chains"].values())
        and chains["altered_host_seal"] != 0
        and chains["host_seal_is_s3_object"] == 0
        and chains["forwarded_again"].startswith("0 seal(s) forwarded"))
    (workdir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'OK' if result['ok'] else 'UNEXPECTED'}: each service's log verified under its own source in one "
          "log per host; each record's chain to the central log verified; the altered chain "
          f"{'failed' if chains['altered_host_seal'] else 'DID NOT FAIL'}. Files: {workdir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
