"""manage.py export_trial: the same job, run in-process, with a progress bar and the file's place."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from exports.models import ExportJob, State

pytestmark = pytest.mark.django_db


def test_the_command_exports_and_copies_the_package(world, subjects, tmp_path: Path, capsys):
    out, target = io.StringIO(), tmp_path / "copy.zip"
    call_command("export_trial", world.trial.code, "--format", "probe", "--user", "monitor_a", "--output",
                 str(target), stdout=out)
    job = ExportJob.objects.get()
    assert (job.state, job.requested_by, job.sites) == (State.DONE, world.monitor, ["SA"])
    assert job.file_name in out.getvalue() and str(target) in out.getvalue()
    assert "manifest.json" in zipfile.ZipFile(target).namelist()
    assert "2/2 files" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "probe", "--user", "nobody"], "No active user nobody."),
    (["--format", "nope", "--user", "dm"], "No export format 'nope'"),
    (["--format", "probe", "--user", "coord_a"], "does not allow the probe export"),
    (["--format", "probe", "--user", "monitor_a", "--site", "SB"], "No site SB among the sites you may export"),
])
def test_the_command_says_why_it_refuses(world, subjects, args, message):
    with pytest.raises(CommandError) as err:
        call_command("export_trial", world.trial.code, *args)
    assert message in str(err.value)
    assert not ExportJob.objects.exists()
