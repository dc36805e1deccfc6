"""Recording jobs: making the browser-playable file of a call, and the sweep of recordings whose
job was lost. See docs/recordings.md."""
from rq import get_current_job

from . import _will_retry, job_context


def process_recording(conference_id: int):
    """RQ job `recording-<id>` (enqueued by `recording.enqueue_processing`)."""
    from ..services import recording

    with job_context("process_recording"):
        return recording.process(conference_id, will_retry=_will_retry(get_current_job()))


def sweep_unprocessed_recordings():
    """Enqueue again every recording still `processing` whose job is gone (Redis was down when
    the call ended, or restarted empty); mark `failed` those whose job ended as failed without
    saying so (its work-horse was killed on the last attempt). Safe to run often."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from sqlalchemy import select

    from ..extensions import db
    from ..models import Conference
    from ..services import audit, recording
    from . import redis_connection

    with job_context("sweep_unprocessed_recordings"):
        conferences = db.session.execute(
            select(Conference).where(Conference.recording_state == "processing")
            .order_by(Conference.id)).scalars().all()
        todo = [(c.id, recording.call_seconds(c)) for c in conferences]
        db.session.commit()
        connection = redis_connection()
        for conference_id, seconds in todo:
            try:
                status = Job.fetch(recording.job_id(conference_id),
                                   connection=connection).get_status(refresh=True)
            except NoSuchJobError:
                recording.enqueue_job(conference_id, seconds)
                continue
            if status == JobStatus.FAILED:
                conference = db.session.get(Conference, conference_id, with_for_update=True)
                if conference is not None and conference.recording_state == "processing":
                    conference.recording_state = "failed"
                    notes = dict(conference.recording_notes or {})
                    notes["error"] = "the processing job failed (its worker was stopped)"
                    conference.recording_notes = notes
                    audit.record("recording.processing_failed", actor=audit.SYSTEM,
                                 obj=conference, cert_request=conference.request,
                                 details={"error": notes["error"], "will_retry": False})
                db.session.commit()
        return len(todo)
