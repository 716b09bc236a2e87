import pytest
from django.test import Client

from billing.models import Product, UsagePeriod
from chat.models import AIModel
from testsupport.http import bearer
from testsupport.scripted import SCRIPTED_MODEL

pytestmark = pytest.mark.django_db(transaction=True)


def test_free_users_are_refused_pro_models_with_a_clear_message(scripted, owner, owner_key):
    AIModel.objects.filter(name=SCRIPTED_MODEL).update(pro=True)
    response = Client().post(
        "/api/v1/chat", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 403
    assert response.json()["code"] == "pro_model" and "paid plans" in response.json()["error"]
    assert not UsagePeriod.objects.filter(chats_used__gt=0).exists()


def test_subscribers_may_use_them(scripted, owner, owner_key):
    AIModel.objects.filter(name=SCRIPTED_MODEL).update(pro=True)
    owner.product = Product.objects.create(external_id="prod_1", name="Pro")
    owner.save()
    response = Client().post(
        "/api/v1/chat", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 201


def test_an_archived_product_no_longer_grants_pro(scripted, owner, owner_key):
    AIModel.objects.filter(name=SCRIPTED_MODEL).update(pro=True)
    owner.product = Product.objects.create(external_id="prod_old", name="Old", is_archived=True)
    owner.save()
    response = Client().post(
        "/api/v1/chat", {"prompt": "hi"}, content_type="application/json", headers=bearer(owner_key)
    )
    assert response.status_code == 403
