from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        # Each format module registers itself in exports.formats.REGISTRY on import.
        from exports.formats import load_all

        load_all()
