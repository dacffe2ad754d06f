from rest_framework.routers import SimpleRouter

from dataqueries import api

router = SimpleRouter()
router.register("queries", api.DataQueryViewSet, basename="data-query")
urlpatterns = router.urls
