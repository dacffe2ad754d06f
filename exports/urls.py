from rest_framework.routers import SimpleRouter

from exports import api

router = SimpleRouter()
router.register("exports", api.ExportJobViewSet, basename="export")
urlpatterns = router.urls
