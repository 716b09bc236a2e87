from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/", views.new_chat, name="new"),
    path("chat/bookmarked/", views.bookmarked, name="bookmarked"),
    path("chat/<uuid:chat_id>/", views.chat_page, name="chat"),
    path("chat/<uuid:chat_id>/rename/", views.rename, name="rename"),
    path("chat/<uuid:chat_id>/share/", views.toggle_share, name="share"),
    path("chat/<uuid:chat_id>/bookmark/", views.toggle_bookmark, name="bookmark"),
    path("chat/<uuid:chat_id>/delete/", views.delete, name="delete"),
    path("chat/<uuid:chat_id>/documents/<int:document_id>/file", views.document_file, name="document_file"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/select/", views.select_version, name="select_version"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/edit/", views.edit_prompt, name="edit_prompt"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/prompt/", views.prompt_block, name="prompt_block"),
    path("chat/attachments/", views.attach, name="attach"),
    path("chat/attachments/<str:attachment_id>/remove/", views.detach, name="detach"),
    path("share/<uuid:chat_id>/", views.public_chat_page, name="public"),
    path("chat/sidebar/", views.sidebar, name="sidebar"),
]
