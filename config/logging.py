"""Logging filters. Tracking tokens are credentials in a URL (ASVS V14.2.1's documented
exception): they must not end up in logs, so every record has them masked."""

import logging
import re

TRACKING_TOKEN = re.compile(r"/t/[A-Za-z0-9_-]{6,}")


class RedactTrackingTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/t/" in message:
            record.msg, record.args = TRACKING_TOKEN.sub("/t/<token>", message), ()
        return True
