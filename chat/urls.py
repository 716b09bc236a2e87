from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/", views.new_chat, name="new"),
    path("chat/bookmarked/", views.bookmarked, name="bookmarked"),
    path("chat/assistants/", views.assistants_page, name="assistants"),
    path("chat/assistants/<int:assistant_id>/", views.assistant_page, name="assistant"),
    path("chat/assistants/<int:assistant_id>/delete/", views.delete_assistant, name="assistant_delete"),
    path("chat/assistants/<int:assistant_id>/documents/", views.add_assistant_documents, name="assistant_documents"),
    path(
        "chat/assistants/<int:assistant_id>/documents/<int:document_id>/delete/",
        views.delete_assistant_document,
        name="assistant_document_delete",
    ),
    path("chat/assistants/<int:assistant_id>/start/", views.start_assistant_chat, name="assistant_start"),
    path("chat/<uuid:chat_id>/", views.chat_page, name="chat"),
    path("chat/<uuid:chat_id>/turns/", views.chat_turns, name="turns"),
    path("chat/<uuid:chat_id>/rename/", views.rename, name="rename"),
    path("chat/<uuid:chat_id>/share/", views.toggle_share, name="share"),
    path("chat/<uuid:chat_id>/bookmark/", views.toggle_bookmark, name="bookmark"),
    path("chat/<uuid:chat_id>/delete/", views.delete, name="delete"),
    path("chat/<uuid:chat_id>/menu/", views.chat_menu, name="menu"),
    path("chat/<uuid:chat_id>/folder/", views.move_chat, name="move"),
    path("chat/<uuid:chat_id>/tags/", views.set_tags, name="tags"),
    path("chat/<uuid:chat_id>/pin/", views.toggle_pin, name="pin"),
    path("chat/folders/", views.create_folder, name="folder_create"),
    path("chat/folders/<int:folder_id>/rename/", views.rename_folder, name="folder_rename"),
    path("chat/folders/<int:folder_id>/delete/", views.delete_folder, name="folder_delete"),
    path("chat/<uuid:chat_id>/export/", views.export_chat, name="export"),
    path("chat/export/", views.export_all, name="export_all"),
    path("chat/import/", views.import_chats, name="import"),
    path("chat/<uuid:chat_id>/documents/<int:document_id>/file", views.document_file, name="document_file"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/select/", views.select_version, name="select_version"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/edit/", views.edit_prompt, name="edit_prompt"),
    path("chat/<uuid:chat_id>/queries/<str:query_id>/prompt/", views.prompt_block, name="prompt_block"),
    path("chat/attachments/", views.attach, name="attach"),
    path("chat/attachments/<str:attachment_id>/remove/", views.detach, name="detach"),
    path("share/<uuid:chat_id>/", views.public_chat_page, name="public"),
    path("chat/sidebar/", views.sidebar, name="sidebar"),
    path("chat/search/", views.search, name="search"),
]
