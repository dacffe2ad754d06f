from django.contrib import admin
from django.urls import path

admin.site.site_header = "CAR-T trial data"
admin.site.site_title = "CAR-T trial data"
admin.site.index_title = "Trial administration"

urlpatterns = [
    path("admin/", admin.site.urls),
]
