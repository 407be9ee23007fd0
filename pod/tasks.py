"""django-q2 tasks of proof of delivery: thin wrappers around services, safe to run twice."""

import logging

from pod.services import proof_orphans_purge

logger = logging.getLogger(__name__)


def purge_orphaned_proof_files() -> int:
    removed = proof_orphans_purge()
    if removed:
        logger.info("Removed %d proof file(s) no proof refers to", removed)
    return removed
