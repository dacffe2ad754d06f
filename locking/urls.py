from rest_framework.routers import SimpleRouter

from locking import api

router = SimpleRouter()
router.register("locks", api.LockViewSet, basename="lock")
urlpatterns = router.urls
