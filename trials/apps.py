from django.apps import AppConfig


class TrialsConfig(AppConfig):
    name = "trials"
    verbose_name = "Protocol design"

    def ready(self) -> None:
        from config import checks  # noqa: F401 (registers the deployment checks)
