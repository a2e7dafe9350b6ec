"""The bureau's ECDH-PSI with each node, over the coordinator, in bounded chunks.

The protocol's state is ``federated.BureauRun``; this module moves its chunks over
HTTP: ``POST /v1/training-jobs/{id}/psi`` per chunk of the bureau's blinded ids (in
order; the first starts the run), then ``POST .../psi/points`` per page of the node's
blinded ids. One chunk is in flight while the next is computed (a worker thread does
the HTTP; the scalar multiplications hold the GIL here while the node computes in its
own process), so the two parties' work overlaps. What the bureau holds is its ids'
double-blinded values (40 bytes an id) and, per id the node holds too, the node's
point: never the node's set, whatever its size. With its last chunk the bureau signs
the run's transcript (``signed.SignedPsiTranscript``: every point it sent, in order,
for this job and node), so the node pages out nothing for points a relay slipped in.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from creditshare.client._client import CreditShareClient
from creditshare.client._http import segment
from creditshare.errors import ClientError
from creditshare.federated import DEFAULT_PSI_CHUNK, BureauChunk, BureauRun
from creditshare.signed import SignedPsiTranscript, psi_transcript_document

__all__ = ["PSI_CHUNK", "align_ids", "psi_with_node"]

#: Points per chunk and per page (at most ``federated.MAX_PSI_CHUNK``): ~1.5 MB of JSON.
PSI_CHUNK = DEFAULT_PSI_CHUNK
#: Seconds to wait for one chunk or page: the first chunk makes the node read its ids
#: (tens of seconds at 10^7), and the coordinator gives a node call up to 120 s.
PSI_TIMEOUT = 180.0


def _b64(items: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(i).decode("ascii") for i in items]


def _unb64(items: Sequence[str]) -> list[bytes]:
    return [base64.b64decode(i.encode("ascii"), validate=True) for i in items]


def _transcript_signature(
    client: CreditShareClient, job_id: str, node: str, domain: str, last: BureauChunk
) -> str:
    """The bureau's signature over every point it sent ``node`` in this run, by its
    identity's key (the one its credential certifies), base64."""
    identity = client.identity
    document = psi_transcript_document(
        job_id=job_id,
        requester=identity.participant_id,
        node=node,
        domain=domain.encode("utf-8"),
        points=last.offset + len(last.blinded),
        transcript_sha256=last.transcript,
    )
    return str(SignedPsiTranscript.sign(document, identity.signing_key).to_json()["signature"])


def _post(client: CreditShareClient, path: str, payload: dict[str, Any]) -> Any:
    return client._request("POST", path, json=payload, timeout=PSI_TIMEOUT)


def psi_with_node(
    client: CreditShareClient,
    job_id: str,
    node: str,
    domain: str,
    ids: Sequence[str],
    chunk: int | None = None,
) -> dict[str, bytes]:
    """One streamed PSI run with ``node`` (a fresh scalar): per id of ``ids`` the node
    holds too, the node's blinded point for it (how the bureau names it to the node),
    in the order of ``ids``."""
    size = PSI_CHUNK if chunk is None else chunk
    run = BureauRun(domain.encode("utf-8"), ids)
    path = f"/v1/training-jobs/{segment(job_id)}/psi"
    with ThreadPoolExecutor(1, thread_name_prefix="psi-relay") as relay:

        def answer(pending: tuple[Any, Future[Any]]) -> None:
            part, future = pending
            body = future.result()
            double = _unb64(body["double_blinded"])
            if len(double) != len(part.blinded):
                raise ClientError(
                    f"node {node} answered {len(double)} points for a chunk of "
                    f"{len(part.blinded)} (offset {part.offset})"
                )
            run.answered(part.offset, double, int(body["node_set_size"]))

        pending: tuple[Any, Future[Any]] | None = None
        for part in run.chunks(size):  # the next chunk is blinded while one is relayed
            if pending is not None:
                answer(pending)
            payload = {
                "node": node,
                "domain": domain,
                "blinded": _b64(part.blinded),
                "offset": part.offset,
                "more": part.more,
            }
            if not part.more:
                payload["transcript_signature"] = _transcript_signature(
                    client, job_id, node, domain, part
                )
            pending = (part, relay.submit(_post, client, path, payload))
        if pending is not None:
            answer(pending)

        def page(offset: int) -> Future[Any]:
            return relay.submit(
                _post, client, f"{path}/points", {"node": node, "offset": offset, "limit": size}
            )

        offset, future = 0, page(0)
        while True:
            body = future.result()
            points = _unb64(body["node_blinded"])
            last = bool(body["last"])
            if not points and not last:
                raise ClientError(f"node {node} sent an empty page before its last")
            if not last:  # the node blinds the next page while this one is matched
                future = page(offset + len(points))
            run.match(offset, points, int(body["node_set_size"]))
            offset += len(points)
            if last:
                break
    if not run.complete:
        raise ClientError(f"node {node} ended its points after {offset} of {body['node_set_size']}")
    return run.result()


def align_ids(
    client: CreditShareClient,
    job_id: str,
    ids: Sequence[str],
    nodes: Sequence[str],
    domain: str,
    chunk: int | None = None,
) -> tuple[list[str], dict[str, dict[str, bytes]]]:
    """PSI with each node in turn, each over the ids all earlier nodes hold: the ids
    every node holds (in the order of ``ids``), and each node's point per id."""
    aligned = list(ids)
    points: dict[str, dict[str, bytes]] = {}
    for node in nodes:
        found = psi_with_node(client, job_id, node, domain, aligned, chunk)
        points[node] = found
        aligned = [i for i in aligned if i in found]
    return aligned, points
