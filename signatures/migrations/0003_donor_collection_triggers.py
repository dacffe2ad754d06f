"""The signature invalidation triggers (0002) on the donor collections table, a subject-level table like the
subject's own apheresis collections: a change to a donor collection invalidates the casebook signatures of
its recipient and the signatures of that record."""

from django.db import migrations

TABLE = "patients_donorcollection"
ARGS = "'patients', 'donorcollection', 'id', 'subject_id', 'patients_donorcollection', 'patients.DonorCollection'"
EVENTS = (("INSERT", "REFERENCING NEW TABLE AS new_rows"),
          ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
          ("DELETE", "REFERENCING OLD TABLE AS old_rows"),
          ("TRUNCATE", ""))

CREATE = "\n".join(
    f"CREATE TRIGGER signatures_invalidate_{event.lower()} AFTER {event} ON {TABLE} {referencing} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION signatures_invalidate({ARGS});" for event, referencing in EVENTS)
DROP = "\n".join(f"DROP TRIGGER IF EXISTS signatures_invalidate_{event.lower()} ON {TABLE};" for event, _ in EVENTS)


class Migration(migrations.Migration):

    dependencies = [
        ("signatures", "0002_invalidation_triggers"),
        ("patients", "0005_donor_collections"),
    ]

    operations = [migrations.RunSQL(sql=CREATE, reverse_sql=DROP)]
