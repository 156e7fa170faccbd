"""The evidence pack's pages for people: the key history table and the HTML report, with the control mapping.

The report is one self-contained HTML file (inline CSS, no script, no image,
no link to anything outside the page) that prints on A4 or Letter. It shows
the result of the verification made when the pack was built; ``notary
verify-pack`` recomputes it, and this page, to compare. ``CONTROLS`` and ``NOT_COVERED`` are the wording
auditors read: they cite the clause and its version and claim no more than
the notary does.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from html import escape

from hsm.keyring import Keyring

from notary.evidence import (
    AUDIT_JSON, AUDIT_TEXT, KEY_HISTORY, KEYRING, MANIFEST, PACK_JSON, REPORT, TRANSCRIPT, TSA_ROOTS, PackVerdict,
)
from notary.trust import TrustedKeys
from notary.verify import FAILED

# (framework and version, clause, what the clause asks, in short, how the pack bears on it, what it leaves to others)
CONTROLS: tuple[tuple[str, str, str, str, str], ...] = (
    ("SOX ITGC (Sarbanes-Oxley Act of 2002 §404; PCAOB AS 2201; COSO Internal Control – Integrated Framework 2013, "
     "principle 11)",
     "Computer operations",
     "Processing, job and interface logs that support financial reporting are complete and reliable.",
     "Shows that the log records submitted to the notary during the period have not been altered, removed or "
     "reordered since they were notarized: each is in a Merkle log whose signed, timestamped seals form one "
     "unbroken chain.",
     "Does not show that jobs ran correctly or that failures were followed up; that is the entity's operations "
     "control."),
    ("SOX ITGC (as above)",
     "Access to programs and data",
     "Access and change activity is logged, and privileged users cannot alter that evidence unnoticed.",
     "Notarized access and change logs cannot be rewritten afterwards without it showing, even by someone with "
     "root on the log host or full database rights: that would need the HSM key, a new timestamp for a past time, "
     "and removing COMPLIANCE-locked objects.",
     "Does not show that access was appropriate, approved or reviewed."),
    ("PCI DSS v4.0.1 (June 2024)", "10.2.2",
     "Audit logs record, for each auditable event, user identification, type of event, date and time, success or "
     "failure, origination, and the affected data, component or resource.",
     "Supporting only: once recorded and notarized, these details cannot be altered without detection.",
     "What a record contains is decided by the producing system; the notary sees only digests and cannot check "
     "that the required details are present."),
    ("PCI DSS v4.0.1", "10.3.2",
     "Audit log files are protected to prevent modifications by individuals.",
     "Detective for the log files themselves: a modified or deleted notarized record no longer matches the log "
     "(`notary verify-log`). Preventive for the seals: they are locked in S3 COMPLIANCE mode, which no account "
     "can lift before retain-until.",
     "File permissions and access control on the log files remain the entity's; the notary does not stop a "
     "modification, it makes it visible."),
    ("PCI DSS v4.0.1", "10.3.3",
     "Audit log files are promptly backed up to a secure, central, internal log server or other media that is "
     "difficult to modify.",
     "Partial: the seals (signed Merkle roots over the records' digests) are promptly written to WORM storage. "
     "They are not a backup: the log content cannot be restored from them.",
     "The central log store and its backups remain the entity's."),
    ("PCI DSS v4.0.1", "10.3.4",
     "File integrity monitoring or change-detection mechanisms are used on audit logs so that existing log data "
     "cannot be changed without generating alerts.",
     "Provides the change-detection mechanism: `notary verify-log` names each altered, deleted, inserted or "
     "reordered line; `notary audit` names each tampered seal. This pack shows the seal chain of the period intact.",
     "Alerts arise only if the entity runs these checks on a schedule and routes their non-zero exit status to its "
     "alerting."),
    ("PCI DSS v4.0.1", "10.5.1",
     "Audit log history is retained for at least 12 months, with at least the most recent three months "
     "immediately available for analysis.",
     "The seals are locked in COMPLIANCE mode until their retain-until date (listed in this report; `notary audit "
     "--min-retention-days` checks it against a policy), so proof of integrity outlives the period.",
     "Retention and availability of the log records themselves remain the entity's."),
    ("PCI DSS v4.0.1", "10.7.2",
     "Failures of critical security control systems, including audit logging mechanisms, are detected, alerted "
     "and addressed promptly.",
     "The notary exposes its own failures (`/healthz` fails when no seal was anchored for too long; metrics), and "
     "a gap or break in the seal chain shows in this pack and in `notary audit`.",
     "Monitoring, alerting and the response to a failure are the entity's process."),
    ("SOC 2: AICPA Trust Services Criteria (2017), revised points of focus (2022)", "CC7.2",
     "The entity monitors system components and the operation of those components for anomalies indicative of "
     "malicious acts, natural disasters and errors, and analyzes anomalies to determine whether they are "
     "security events.",
     "Supports the reliability of the logs that monitoring relies on, and makes tampering with them an anomaly "
     "that can be detected and evidenced.",
     "The notary does not detect or analyze anomalies in the logged activity."),
    ("HIPAA Security Rule, 45 CFR Part 164 Subpart C", "164.312(b) Audit controls",
     "Implement hardware, software and/or procedural mechanisms that record and examine activity in information "
     "systems that contain or use electronic protected health information.",
     "Supports the integrity of the recorded activity: notarized audit records cannot be altered afterwards "
     "without detection.",
     "The notary neither records nor examines activity; the producing systems and the review process do."),
    ("HIPAA Security Rule, 45 CFR Part 164 Subpart C", "164.312(c)(1) Integrity",
     "Implement policies and procedures to protect electronic protected health information from improper "
     "alteration or destruction.",
     "For records that are notarized (for example audit logs that hold ePHI), improper alteration or removal "
     "after notarization is detectable.",
     "Does not protect ePHI in application data stores, and does not prevent destruction: it detects it."),
    ("GDPR: Regulation (EU) 2016/679", "Art. 32(1)(b)",
     "The ability to ensure the ongoing confidentiality, integrity, availability and resilience of processing "
     "systems and services.",
     "Contributes to integrity: tampering with notarized logs is detectable. The notary log holds SHA-256 digests "
     "of records and the names of the submitting sources (service identities chosen by the operator), not the "
     "records, so it does not itself hold the personal data the records may contain.",
     "A digest of a short or guessable record can be confirmed by someone who guesses the record, so whether a "
     "digest is personal data in context is for the controller to assess; source names should not name persons. "
     "Confidentiality and availability are not addressed."),
)

NOT_COVERED: tuple[str, ...] = (
    "Truth and completeness at the time of writing: the notary proves that a record has not changed since it was "
    "notarized, not that it was true, complete, or written at all.",
    "Anything before submission: records altered or deleted before their digest reached the notary, a producer "
    "that was stopped, misconfigured or bypassed, and the seconds between writing a record and its seal.",
    "The log host's clock: times inside records are the host's. The notary proves only that a record existed no "
    "later than its seal's RFC 3161 time.",
    "Availability of the producers' own log files: the notary keeps digests, not records; a lost log file cannot "
    "be restored from it, only shown to have existed.",
    "Confidentiality of logs, access control to them, and their review: these are the entity's controls.",
    "The trust anchors themselves: that the keyring given to the auditor is the log's (compare key fingerprints "
    "obtained separately), that the TSA's clock and keys are sound, and that the storage provider enforces "
    "COMPLIANCE mode.",
    "This pack is not signed as a whole: SHA256SUMS shows changes only against a copy of SHA256SUMS the auditor "
    "trusts (note its SHA-256 on receipt). The seals inside are signed and timestamped, so a forged one fails on its "
    "own; but seals removed from the pack, with pack.json, audit/audit.json and SHA256SUMS rewritten to match, show "
    "only against that copy or against the bucket (`notary audit`).",
    "Locks and object versions in S3 were checked when the pack was made (audit/audit.json); checking them again "
    "needs read access to the bucket (`notary audit`).",
)


def key_history_text(keyring: Keyring) -> str:
    """Every key event, oldest first, then each key's interval of service, as a fixed-width table."""
    lines = [f"Key history of log {keyring.name} (from keys/keyring.json; docs/KEYS.md)", "",
             f"{'seq':>3}  {'time (UTC)':<20}  {'event':<8}  {'key id':<32}  {'label':<20}  {'algorithm':<10}  "
             "event SHA-256"]
    for e in keyring.events:
        lines.append(f"{e.seq:>3}  {e.time:<20}  {e.event:<8}  {e.key_id.hex():<32}  {e.label:<20}  "
                     f"{e.algorithm:<10}  {e.digest().hex()}")
    lines += ["", "Keys and the interval in which their signatures count:"]
    lines += [f"  {k.name()}: {k.interval()}" for k in TrustedKeys.from_keyring(keyring).keys]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;font-size:10.5pt;color:#111;max-width:1100px;margin:1.5em auto;
padding:0 1.2em;line-height:1.4}
h1{font-size:17pt;margin:.2em 0}h2{font-size:13pt;margin-top:1.6em;border-bottom:1px solid #888}
table{border-collapse:collapse;width:100%;margin:.6em 0}th,td{border:1px solid #999;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}code,pre,.mono{font-family:"DejaVu Sans Mono",monospace;
font-size:8.5pt}.mono{word-break:break-all}pre{white-space:pre-wrap;border:1px solid #ccc;padding:.5em;background:#fafafa}
.result{border:2px solid;padding:.6em .8em;font-size:11.5pt;margin:1em 0}
.ok{border-color:#1a7f37;background:#eaf6ec}.bad{border-color:#b42318;background:#fdecea}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.15em 1.2em}dl.summary dt{font-weight:bold}
dl.summary dd{margin:0}
@page{size:A4;margin:15mm}
@media print{body{max-width:none;margin:0;padding:0;font-size:9.5pt}h2{break-after:avoid}
tr,.result{break-inside:avoid}pre{white-space:pre-wrap}}
"""


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]], numeric: tuple[int, ...] = (),
           widths: tuple[int, ...] = ()) -> str:
    """Cells are HTML already (escape before); ``widths`` in percent fix the layout (long unbreakable values)."""
    cols = "".join(f'<col style="width:{w}%">' for w in widths)
    style = ' style="table-layout:fixed;width:99.5%"' if widths else ""
    out = [f"<table{style}>{cols}<thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(verdict: PackVerdict, pack: dict, keyring: Keyring, files: Mapping[str, bytes]) -> str:
    """The report: result, summary, seals, key history, control mapping, limits, re-verification, files."""
    e = escape
    period = verdict.period.describe() if verdict.period else "?"
    inside = verdict.period_seals()
    entries = ""
    if inside:
        before = verdict.seals[0].seal.tree_size if verdict.seals[0].role == "before" else 0
        entries = f"{inside[-1].seal.tree_size - before} (tree size {before} to {inside[-1].seal.tree_size})"
    summary = [
        ("Log", e(verdict.origin)),
        ("Period", e(period)),
        ("Seals in the period", f'<span id="seal-count">{len(inside)}</span>'),
        ("Entries added in the period", e(entries or "0")),
        ("First / last timestamp", e(f"{_when(inside[0])} / {_when(inside[-1])}" if inside else "none")),
        ("Time-Stamping Authority", e(", ".join(sorted({s.verified.timestamp.tsa for s in verdict.seals
                                                         if s.verified})) or "none verified")),
        ("Seals in the pack", e(f"{len(verdict.seals)} (with the seal before and the seal after the period, "
                                "where they exist)")),
        ("Bucket", f'<span class="mono">{e("s3://" + pack["bucket"] + "/" + pack["prefix"])}</span>'),
        ("Pack made", e(pack["created_at"])),
    ]
    seal_rows = []
    for s in verdict.seals:
        stated = next((x for x in pack["seals"] if x["file"] == s.file), {})
        v = s.verified
        seal_rows.append((
            e(s.role or "?"), str(s.seal.tree_size) if s.seal else "?",
            str(s.seal.previous_tree_size) if s.seal else "?", e(_when(s)),
            e(", ".join(k.name() for k in v.signed_by) if v else "not verified"),
            e(f"{stated.get('lock_mode') or 'none'} until {stated.get('retain_until') or '-'}"),
            e("ok" if all(c.status != FAILED for c in s.checks) else "FAILED")))
    key_rows = [(str(k.seq), e(k.time), e(k.event), f'<span class="mono">{k.key_id.hex()}</span>', e(k.label),
                 e(k.algorithm)) for k in keyring.events]
    control_rows = [tuple(_prose(c) for c in row) for row in CONTROLS]
    file_rows = [(f'<span class="mono">{e(p)}</span>', str(len(d)), f'<span class="mono">{hashlib.sha256(d).hexdigest()}</span>')
                 for p, d in sorted(files.items()) if p != REPORT]
    result_class = "ok" if verdict.ok else "bad"
    problems = "".join(f"<li>{e(p.line())}</li>" for p in verdict.problems)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evidence pack: {e(verdict.origin)}, {e(period)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Evidence pack: notarized log integrity</h1>
<p>Log <b>{e(verdict.origin)}</b>, period <b id="period">{e(period)}</b>. Made by merkle-notary
<code>notary evidence</code>; re-verify with <code>notary verify-pack</code> (below).</p>

<h2>Verification result</h2>
<div class="result {result_class}" id="result"><b>{e(verdict.sentence())}</b>
{f"<ul>{problems}</ul>" if problems else ""}</div>
<p>This is the result computed when the pack was made. The full transcript (what was checked, how, and each
outcome) is <code>{TRANSCRIPT}</code>; the audit of the whole bucket prefix is <code>{AUDIT_TEXT}</code>.</p>
<dl class="summary">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in summary)}</dl>

<h2>Seals</h2>
<p>Each seal is a signed checkpoint of the log (tree size and Merkle root), timestamped by an RFC 3161
Time-Stamping Authority and stored in S3 under Object Lock. Each holds the consistency proof from the seal before it,
so together they show that the log only grew.</p>
{_table(("role", "tree size", "previous", "RFC 3161 time (UTC)", "signed by", "S3 lock (when the pack was made)",
         "checks"), seal_rows, numeric=(1, 2))}
<p>The seal of tree size N is the file <code>seals/N.json</code> (N in 20 digits), byte for byte the S3 object.</p>

<h2>Key history</h2>
<p>From <code>{KEYRING}</code> (also as a table in <code>{KEY_HISTORY}</code>). A key's signatures count only between
its activation and its retirement, judged at the timestamp's time.</p>
{_table(("seq", "time (UTC)", "event", "key id", "label", "algorithm"), key_rows, numeric=(0,))}

<h2>Control mapping</h2>
<p>How this evidence bears on common control requirements. It supports the controls listed; it does not by itself
satisfy any of them, and the assessment is the auditor's.</p>
<div id="controls">{_table(("framework (version)", "clause", "requirement (paraphrased)", "what this evidence shows",
                            "not shown / left to the entity"), control_rows)}</div>

<h2>What the notary does not cover</h2>
<ul id="not-covered">{"".join(f"<li>{_prose(t)}</li>" for t in NOT_COVERED)}</ul>

<h2>How to re-verify this pack</h2>
<pre>notary verify-pack DIR          # offline: files, signatures, timestamps, chain, period
sha256sum -c SHA256SUMS         # the files alone, with standard tools (run inside DIR)
notary audit --bucket {e(pack["bucket"])} --prefix {e(pack["prefix"])} --keyring {KEYRING} --tsa-roots {TSA_ROOTS}
                                # locks and versions in S3 now (needs read access)</pre>
<p>Exit status 0 means verified; see docs/AUDITORS.md for the other codes.</p>

<h2>Files</h2>
<p>SHA-256 of every file of the pack but this report and <code>{MANIFEST}</code>, which lists them all
(this report included). Machine-readable: <code>{PACK_JSON}</code>, <code>{AUDIT_JSON}</code>;
TSA roots: <code>{TSA_ROOTS}</code>.</p>
{_table(("file", "bytes", "SHA-256"), file_rows, numeric=(1,), widths=(38, 9, 53))}
</body></html>
"""


def _prose(text: str) -> str:
    """Escaped text, with `command` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def _when(s) -> str:
    if s.verified is None:
        return "not verified"
    return s.verified.time.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
