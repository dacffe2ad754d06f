from django.apps import AppConfig


class DataQueriesConfig(AppConfig):
    name = "dataqueries"
    verbose_name = "Data queries"
