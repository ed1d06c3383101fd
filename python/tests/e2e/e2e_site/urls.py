from django.urls import path

from . import views

urlpatterns = [
    path("pid", views.pid),
    path("anon", views.Anon.as_view()),
    path("user", views.UserView.as_view()),
    path("uploads", views.Uploads.as_view()),
    path("burst", views.Burst.as_view()),
]
