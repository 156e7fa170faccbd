"""examples/microservices: services attributed in one log, and a proof chain from a host record to the central log."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from anchors.tsa import load_roots
from examples.microservices.demo import EVENTS, HOSTS
from notary.hierarchy import parse_chain, seal_digest, verify_chain
from notary.note import b64decode_strict, b64encode
from notary.tlogproof import parse_tlog_proof
from notary.trust import TrustedKeys
from notary.verify import EXIT_INCLUSION, EXIT_RECORD, EXIT_TIMESTAMP

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("microservices")
    done = subprocess.run([sys.executable, "-m", "examples.microservices.demo", "--workdir", str(workdir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((workdir / "result.json").read_text())


def chain_of(demo, service):
    entry = demo["chains"][service]
    chain = parse_chain(Path(entry["chain"]).read_bytes())
    return chain, hashlib.sha256(entry["line"].encode()).digest(), entry["host"]


def verify(demo, chain, digest, host_source):
    trust = TrustedKeys.from_strings(demo["vkeys"])
    return verify_chain(chain, trust, trust, load_roots(Path(demo["tsa_roots"])), record_digest=digest,
                        host_source=host_source)


def test_each_services_log_verifies_under_its_own_source_in_its_hosts_one_log(demo):
    for host, services in HOSTS.items():
        log = demo["logs"][host]
        for name in services:
            assert log["services"][name] == {"verify_log": 0, "verify": 0, "proof_source": name}
        # Every entry is a service's (the rest: the notary's own key events).
        assert {s: n for s, n in log["entries_per_source"].items() if s != "notary/keyring"} == dict.fromkeys(services, EVENTS)


@pytest.mark.parametrize("service", [s for services in HOSTS.values() for s in services])
def test_each_record_chain_reaches_the_central_log_through_its_hosts_seal(demo, service):
    chain, digest, host = chain_of(demo, service)
    verdict = verify(demo, chain, digest, host)
    assert verdict.exit_code == 0, verdict.render_text()
    assert verdict.host.entry.source == service and verdict.central.entry.source == host
    assert verdict.central.entry.digest == seal_digest(chain.host_seal) == hashlib.sha256(chain.host_seal).digest()


def _altered_host_seal(chain, demo):
    doc = json.loads(chain.host_seal)
    doc["sealed_at"] = "2000-01-01T00:00:00.000000Z"  # outside the signed, time-stamped checkpoint
    return dataclasses.replace(chain, host_seal=json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def _other_hosts_seal(chain, demo):
    return dataclasses.replace(chain, host_seal=chain_of(demo, "inventory")[0].host_seal)


def _other_central_proof(chain, demo):
    return dataclasses.replace(chain, central_proof=chain_of(demo, "inventory")[0].central_proof)


def _central_path_hash_flipped(chain, demo):
    head, sep, checkpoint = chain.central_proof.decode().partition("\n\n")
    lines = head.split("\n")
    lines[3] = b64encode(bytes(b ^ 1 for b in b64decode_strict(lines[3], "hash")))
    assert len(parse_tlog_proof(chain.central_proof).path) >= 1
    return dataclasses.replace(chain, central_proof=("\n".join(lines) + sep + checkpoint).encode())


@pytest.mark.parametrize("alter, link, code", [
    (_altered_host_seal, "central", EXIT_RECORD),  # SHA-256 of the seal is no longer the central entry
    (_other_hosts_seal, "host", EXIT_TIMESTAMP),  # a valid seal, but not of the record's checkpoint
    (_other_central_proof, "central", EXIT_RECORD),  # a valid central proof, of another host's seal
    (_central_path_hash_flipped, "central", EXIT_INCLUSION),
])
def test_an_altered_link_fails_the_chain_at_that_link(demo, alter, link, code):
    chain, digest, host = chain_of(demo, "orders")
    verdict = verify(demo, alter(chain, demo), digest, host)
    assert verdict.exit_code == code, verdict.render_text()
    failed = verdict.host if link == "host" else verdict.central
    assert not failed.ok and (link == "central") == verdict.host.ok


def test_another_record_or_another_forwarder_fails_the_chain(demo):
    chain, digest, host = chain_of(demo, "orders")
    assert verify(demo, chain, hashlib.sha256(b"not the record").digest(), host).exit_code == EXIT_RECORD
    verdict = verify(demo, chain, digest, "host-b")
    assert verdict.exit_code == EXIT_RECORD and verdict.source_mismatch


def test_the_host_seal_in_a_chain_is_the_locked_s3_object_byte_for_byte(demo):
    assert demo["host_seal_is_s3_object"] == 0  # notary verify --s3 --seal: one version, COMPLIANCE, same bytes


def test_the_altered_chain_in_the_demo_failed(demo):
    assert demo["altered_host_seal"] == EXIT_RECORD


def test_forwarding_again_sends_no_seal_twice(demo):
    assert demo["forwarded_again"].startswith("0 seal(s) forwarded")
