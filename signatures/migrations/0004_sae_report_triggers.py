"""The signature invalidation triggers (0002) on the SAE reports table: a report belongs to its adverse event
as the CRS and ICANS assessments do, so recording or changing one invalidates the casebook signatures of
the subject and the signatures of that adverse event."""

from django.db import migrations

TABLE = "patients_saereport"
ARGS = "'patients', 'adverseevent', 'event_id', '', 'patients_adverseevent', 'patients.SaeReport'"
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
        ("signatures", "0003_donor_collection_triggers"),
        ("patients", "0007_clinical_labels"),
    ]

    operations = [migrations.RunSQL(sql=CREATE, reverse_sql=DROP)]
