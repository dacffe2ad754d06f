"""Display formats of the admin (``FORMAT_MODULE_PATH``): the same as ``config.display`` writes.

Only the output formats change; what users may type (``DATE_INPUT_FORMATS``) stays Django's en-GB.
"""

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
# Read on the current zone (the record's site on its page, else UTC), with its offset: no abbreviation (CST is
# China's and US Central's). Django writes the offset as +0800; clinical records' read-only date-times are
# written by config.display (UTC+08:00) instead (trials.admin_scoping.ReadableFieldsMixin).
DATETIME_FORMAT = r"Y-m-d H:i (\U\T\CO)"
SHORT_DATETIME_FORMAT = r"Y-m-d H:i (\U\T\CO)"
