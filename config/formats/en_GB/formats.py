"""Display formats of the admin (``FORMAT_MODULE_PATH``): the same as ``config.display`` writes.

Only the output formats change; what users may type (``DATE_INPUT_FORMATS``) stays Django's en-GB.
"""

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i T"  # read on the current zone: the record's site on its page, else UTC
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
