from tests.test_search import *  # noqa
def test_peek(workflow, eval_set):
    import pprint
    for q, m in [("sessions expire too early","hybrid"),("deadlock detected","keyword"),("Varnish Set-Cookie","keyword"),("at ProjectRow.tsx:57","keyword"), ("people data day", "keyword"), ("automated checks sometimes break because the key-value store boots too slowly", "semantic")]:
        print(q, m); pprint.pprint(ticket_search(workflow_ids=[workflow.pk], query=q, search_type=m, limit=3))
    for title, desc in [("Users logged out too quickly", "Sessions seem to end after a few minutes even though they should last all day."), ("Translate the onboarding tour into Spanish", ""), ("Stripe webhook signature errors", "Webhook calls fail signature verification since we changed the secret"), ("Add CSV export of the audit log", "")]:
        print(title); pprint.pprint(similar_tickets(workflow_ids=[workflow.pk], title=title, description=desc, threshold=0.0, limit=3))
