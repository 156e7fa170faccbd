"""The quarterly evidence run: make the pack, re-verify it from its own files, notarize its manifest.

    python -m examples.fintech.quarterly (--previous-quarter | --from DATE --to DATE) --out DIR \\
        --notary-url URL --token-file FILE  <notary evidence options: --keyring, --tsa-roots, --bucket, ...>

1. ``notary evidence`` writes the period's pack into DIR (``{from}`` and
   ``{to}`` replaced by the period's first and last day);
2. ``notary verify-pack DIR`` re-checks it with nothing but its files, as the
   auditor will;
3. SHA-256 of the pack's ``SHA256SUMS`` is submitted to the notary and the
   proof written beside the pack (``DIR.tlog-proof``, once sealed): the pack
   itself is then in the log, timestamped and locked like any record, so a
   pack handed over later can be shown to be the one made at the time.

Exit status: the first failing step's (``notary evidence``'s or
``notary verify-pack``'s, docs/AUDITORS.md), 1 if the notary refused the
manifest, 75 (EX_TEMPFAIL) if the notary acknowledged the manifest but stopped
before sealing it (it is durably in the log: its index is in
``DIR.tlog-index``; do not run again, fetch the proof with
``notary proof --index N -o DIR.tlog-proof`` once the notary is back), 0 when
all three steps passed. The systemd drop-in beside this file
runs it from the product's quarterly timer.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

from notary.client import AcknowledgedNotSealedError, ClientError, HttpClient, record_digest
from notary.evidence import Period

EX_TEMPFAIL = 75  # sysexits.h: the manifest is in the log, its proof can be fetched later


def pack_dir(out: str, period: Period) -> Path:
    first, last = period.slug()
    return Path(out.replace("{from}", first).replace("{to}", last))


def notary(*args: str) -> int:
    print(f"$ notary {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "notary.cli", *args]).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fintech.quarterly", description=__doc__.split("\n\n")[0])
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--previous-quarter", action="store_true", help="the calendar quarter before today's (UTC)")
    when.add_argument("--from", dest="start", metavar="DATE")
    parser.add_argument("--to", dest="end", metavar="DATE")
    parser.add_argument("--out", required=True, help="the pack's directory; {from} and {to} are replaced")
    parser.add_argument("--notary-url", required=True, help="the notary that notarizes the pack's manifest")
    parser.add_argument("--token-file", type=Path, required=True, help="the evidence runner's bearer token")
    args, evidence_options = parser.parse_known_args(argv)
    if args.previous_quarter:
        period, when_args = Period.previous_quarter(datetime.datetime.now(datetime.UTC).date()), ["--previous-quarter"]
    else:
        if args.end is None:
            parser.error("give --to DATE with --from DATE")
        period, when_args = Period.parse(args.start, args.end), ["--from", args.start, "--to", args.end]
    out = pack_dir(args.out, period)

    code = notary("evidence", *when_args, "--out", str(out), *evidence_options)
    if code != 0:
        return code
    code = notary("verify-pack", str(out))
    if code != 0:
        return code
    manifest = (out / "SHA256SUMS").read_bytes()
    client = HttpClient(args.notary_url, args.token_file.read_text().strip())
    receipt = out.with_name(out.name + ".tlog-proof")
    try:
        entry = client.submit([record_digest(manifest)], wait_sealed=True)[0]
    except AcknowledgedNotSealedError as exc:
        (index,) = exc.indices
        pending = out.with_name(out.name + ".tlog-index")
        pending.write_text(f"{index}\n")
        print(f"the pack is verified and its manifest is log entry {index}, durably, but the notary stopped before "
              f"sealing it ({pending}). Do not run this again (the manifest would be in the log twice): once the "
              f"notary is back, fetch the proof with: notary proof --url {args.notary_url} --token-file "
              f"{args.token_file} --index {index} -o {receipt}", file=sys.stderr)
        return EX_TEMPFAIL
    except ClientError as exc:
        print(f"the pack is verified, but its manifest was not notarized: {exc}", file=sys.stderr)
        return 1
    receipt.write_text(entry["proof"])
    print(f"notarized: SHA-256 of {out / 'SHA256SUMS'} is log entry {entry['index']}; proof in {receipt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
