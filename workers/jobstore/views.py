"""The job JSON that clients see: from `GET /v1/jobs/<id>` and in webhook payloads."""

from __future__ import annotations

from typing import Any

from workers.jobstore.records import iso


def job_links(job_id: str, base_url: str = "") -> dict[str, str]:
    return {"self": f"{base_url}/v1/jobs/{job_id}"}


def image_url(job_id: str, index: int, base_url: str = "") -> str:
    return f"{base_url}/v1/jobs/{job_id}/images/{index}.png"


def codes_url(job_id: str, index: int, base_url: str = "") -> str:
    return f"{base_url}/v1/jobs/{job_id}/codes/{index}.json"


# What the worker found, as the job JSON says it: the record's `webhook` field holds
# "<status> (<what happened>)" (workers.webhooks). A refusal's text names the address the
# host resolved to, which is the server's business, not the client's.
WEBHOOK_STATUSES = ("pending", "retrying", "delivered", "refused", "failed")
REFUSED_DETAIL = "the URL's host is an address webhooks may not go to from this server"


def webhook_view(rec: dict[str, Any]) -> dict[str, Any] | None:
    """{status, detail} of the job's webhook (None if it has none); status is one of
    `WEBHOOK_STATUSES`, `pending` until the first attempt."""
    if not (rec.get("request") or {}).get("webhook"):
        return None
    status, _, rest = (rec.get("webhook") or "").partition(" ")
    if status not in WEBHOOK_STATUSES:
        return {"status": "pending", "detail": None}
    detail = rest.strip().removeprefix("(").removesuffix(")") or None
    return {"status": status, "detail": REFUSED_DETAIL if status == "refused" else detail}


def training_view(rec: dict[str, Any], base_url: str = "") -> dict[str, Any]:
    """A training's progress as the job JSON shows it: the phase it is in (of `phases`), step
    and total, the latest losses, items per second, ETA, held-out metrics and sample grid,
    the step a retry resumed from and the step a cancel stopped it at."""
    doc = dict(rec.get("training") or {})
    sample_at = doc.pop("sample_at", None)  # [phase, step] of the grid: the URL changes
    out: dict[str, Any] = {
        k: doc.get(k)
        for k in (
            "phase", "phases", "step", "total", "losses", "items_per_second", "unit",
            "eta_seconds", "eval", "resumed_from", "stopped_at",
        )
    }  # fmt: skip
    out["sample_url"] = (
        None if not sample_at
        else f"{base_url}/v1/jobs/{rec['id']}/sample.png?phase={sample_at[0]}&step={sample_at[1]}"
    )  # fmt: skip
    return out


def job_view(
    rec: dict[str, Any], base_url: str = "", position: int | None = None
) -> dict[str, Any]:
    """A record (records.get_job) as the public job document (a training's adds
    `training`)."""
    job_id = rec["id"]
    status = rec["status"]
    output = rec.get("output")
    if output:
        output = dict(output)
        output["images"] = [
            {
                **image,
                "url": image_url(job_id, image["index"], base_url),
                "codes_url": codes_url(job_id, image["index"], base_url),
            }
            for image in output.get("images", [])
        ]
    view = {
        "id": job_id,
        "kind": rec.get("kind", "generate"),
        "status": status,
        "progress": 1.0 if status == "succeeded" else float(rec.get("progress", 0.0)),
        "position": position if status == "queued" else None,
        "created_at": iso(rec.get("created_at")),
        "started_at": iso(rec.get("started_at")),
        "finished_at": iso(rec.get("finished_at")),
        "attempts": rec.get("attempts", 0),
        "cancel_requested": rec.get("cancel") == "1",
        "request": rec.get("request"),
        "error": rec.get("error"),
        "output": output,
        "webhook": webhook_view(rec),
        "links": job_links(job_id, base_url),
    }
    if view["kind"] == "train":
        view["training"] = training_view(rec, base_url)
    return view
