"""What the coordinator receives from nodes and sends to the bank is ciphertext only.

A recording interceptor sits on every node channel of a real coordinator (real
uvicorn, real node processes), so the test sees byte for byte what the
coordinator held.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import grpc
import httpx
from fastapi import FastAPI
from google.protobuf.descriptor import FieldDescriptor

from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, SlotLayout
from creditshare.demo import Federation, PlaintextOracle, read_enterprises
from creditshare.proto import node_pb2

from .conftest import Trust


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.responses: list[Any] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        response = await call
        self.responses.append(response)
        return response


def test_score_response_schema_has_no_plaintext_number_fields() -> None:
    """By contract a node answer carries bytes (ciphertexts) and names, never numbers."""
    numeric = {
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
    }
    for message in (node_pb2.ScoreResponse, node_pb2.EncryptedIndicator):
        for field in message.DESCRIPTOR.fields:
            assert field.type not in numeric, f"{message.DESCRIPTOR.name}.{field.name}"


def test_coordinator_holds_only_ciphertexts(
    federation: Federation,
    bank_key: PrivateKey,
    oracle: PlaintextOracle,
    trust: Trust,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    layout = federation.layout
    assert layout.coordinator_config is not None
    settings = load_settings(CoordinatorSettings, layout.coordinator_config)
    recorder = Recorder()
    rows = read_enterprises(layout.data_dir)
    uscc = next(r["uscc"] for r in rows if ";" in r["record_chains"])
    key = bank_key.public_key
    consent = trust.consent(uscc)
    # A second coordinator replica on the same database, with a recorder on its channels.
    with serve_app(create_app(settings, interceptors=[recorder])) as url:
        recorder.responses.clear()  # drop the start-up Describe calls
        response = httpx.post(
            f"{url}/v1/queries",
            timeout=30,
            headers={"Authorization": f"Bearer {trust.bank_api_key}"},
            json=trust.signed(
                {
                    "uscc": uscc,
                    "model_id": "sme-scorecard-v1",
                    "purpose": "pre_loan_review",
                    "consent_id": consent,
                    "key_fingerprint": key.fingerprint(),
                }
            ),
        )
    assert response.status_code == 200
    scores = [r for r in recorder.responses if isinstance(r, node_pb2.ScoreResponse)]
    assert len(scores) == len(layout.nodes)

    encoding = FixedPointEncoding(int(response.json()["scale"]))
    blobs: list[bytes] = []
    packing = response.json()["packing"]
    assert packing is not None, "profiles are packed by default"
    slots = SlotLayout(packing["slot_bits"], packing["slots_per_ciphertext"], packing["additions"])
    for reply in scores:
        # Packed answers: one ciphertext per index the node's slots touch, nothing in clear.
        assert reply.packed and not reply.partial_score and not reply.indicators
        fields = [p.ciphertext for p in reply.packed]
        for blob in fields:
            # Every value is a full-width ciphertext that validates under the bank's key...
            assert len(blob) == key.ciphertext_length
            Ciphertext.from_bytes(key, blob)
            # ...and is randomised: not 1 + n·m, which anyone could read as m.
            number = int.from_bytes(blob, "big")
            assert number >= key.n and (number - 1) % key.n != 0
        blobs.extend(fields)
        # Only the bank's private key opens it, to exactly the node's plaintext share.
        first = next(p for p in reply.packed if p.index == 0)
        opened = bank_key.raw_decrypt(Ciphertext.from_bytes(key, first.ciphertext).value)
        partial = slots.unpack(FixedPointEncoding.decode_integer(opened, key))[0] / encoding.scale
        expected = oracle.linear(uscc, [reply.node_id]) - oracle.linear(uscc, [])
        assert abs(partial - expected) <= 1e-6

    # No raw value of the enterprise appears in anything the coordinator held or sent.
    raw_values: set[str] = set()
    for node in layout.nodes:
        with node.data_file.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["uscc"] == uscc:
                    raw_values.update(v for k, v in row.items() if k != "uscc" and len(v) >= 4)
    assert raw_values, "the chosen enterprise should have multi-digit raw values"
    held = b"".join(blobs) + json.dumps(response.json()).encode()
    text = json.dumps(response.json())
    for value in raw_values:
        assert value.encode() not in held
    assert "linear" not in text and "probability" not in text
