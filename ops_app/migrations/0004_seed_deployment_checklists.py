"""The four deployment checklists of the seed (section 10), item by item, with the
items the app can verify itself tied to their automatic check."""

from django.db import migrations

# (slug, section, title, [(group, [(text, verifier or "")])])
CHECKLISTS = [
    (
        "pre-deployment",
        "10.1",
        "Pre-Deployment",
        [
            (
                "Infrastructure",
                [
                    ("VPC and subnets created", ""),
                    ("Security groups configured", ""),
                    ("Load balancer provisioned", ""),
                    ("DNS records created", ""),
                    ("SSL certificates issued", ""),
                ],
            ),
            (
                "Kubernetes",
                [
                    ("Cluster created and healthy", ""),
                    ("Node groups sized appropriately", ""),
                    ("RBAC policies configured", ""),
                    ("Network policies in place", ""),
                    ("Pod security policies enabled", ""),
                ],
            ),
            (
                "Secrets Management",
                [
                    ("OpenAI API key stored securely", ""),
                    ("Database credentials in secrets", ""),
                    ("TLS certificates deployed", ""),
                    ("Secret rotation configured", ""),
                ],
            ),
            (
                "Observability",
                [
                    ("Prometheus/metrics server deployed", ""),
                    ("Log aggregation configured", ""),
                    ("Tracing enabled", ""),
                    ("Dashboards created", ""),
                    ("Alert rules configured", ""),
                    ("On-call rotation set up", ""),
                ],
            ),
        ],
    ),
    (
        "deployment",
        "10.2",
        "Deployment",
        [
            (
                "Container Images",
                [
                    ("Images built and scanned", ""),
                    ("Images pushed to registry", ""),
                    ("Image tags/digests recorded", ""),
                ],
            ),
            (
                "Kubernetes Resources",
                [
                    ("Namespaces created", ""),
                    ("ConfigMaps deployed", ""),
                    ("Secrets deployed", ""),
                    ("Deployments applied", ""),
                    ("Services created", ""),
                    ("Ingress configured", ""),
                    ("HPA configured", ""),
                    ("PDBs configured", ""),
                ],
            ),
            (
                "Database",
                [
                    ("Schema migrations applied", "migrations"),
                    ("Indexes created", ""),
                    ("Connection pooling configured", ""),
                    ("Backups verified", ""),
                ],
            ),
            (
                "Redis",
                [
                    ("Cluster healthy", ""),
                    ("Persistence configured", ""),
                    ("Memory limits set", ""),
                ],
            ),
        ],
    ),
    (
        "post-deployment-verification",
        "10.3",
        "Post-Deployment Verification",
        [
            (
                "Functional Tests",
                [
                    ("Health endpoints responding", "health"),
                    ("Session creation works", "session_creation"),
                    ("WebRTC connection succeeds", ""),
                    ("Voice conversation functional", ""),
                    ("Tool execution works", "tool_isolation"),
                    ("Error handling correct", ""),
                ],
            ),
            (
                "Performance Tests",
                [
                    ("Latency within SLA", ""),
                    ("Throughput meets requirements", ""),
                    ("No memory leaks detected", ""),
                    ("CPU usage stable", ""),
                ],
            ),
            (
                "Security Tests",
                [
                    ("TLS configured correctly", "secure_settings"),
                    ("No exposed secrets", "no_secrets"),
                    ("Rate limiting working", "rate_limiting"),
                    ("Authentication enforced", "authentication"),
                    ("Audit logging active", "audit_logging"),
                ],
            ),
            (
                "Monitoring Verification",
                [
                    ("Metrics being collected", "metrics"),
                    ("Logs flowing to aggregator", ""),
                    ("Traces visible", ""),
                    ("Alerts firing correctly", ""),
                    ("Dashboards accurate", ""),
                ],
            ),
        ],
    ),
    (
        "go-live",
        "10.4",
        "Go-Live Checklist",
        [
            (
                "Final Checks",
                [
                    ("Runbooks documented and tested", ""),
                    ("On-call team trained", ""),
                    ("Rollback procedure verified", ""),
                    ("Communication plan ready", ""),
                    ("Status page configured", ""),
                ],
            ),
            (
                "Staged Rollout",
                [
                    ("Canary deployment (5% traffic)", ""),
                    ("Monitor for 30 minutes", ""),
                    ("Increase to 25% traffic", ""),
                    ("Monitor for 1 hour", ""),
                    ("Full rollout", ""),
                    ("Monitor for 24 hours", ""),
                ],
            ),
            (
                "Documentation",
                [
                    ("Architecture docs updated", ""),
                    ("API documentation current", ""),
                    ("Operational runbooks complete", ""),
                    ("Incident response plan ready", ""),
                ],
            ),
        ],
    ),
]


def load(apps, schema_editor):
    """Creates (or brings up to date) every checklist and item; safe to run again."""
    template_model = apps.get_model("ops_app", "ChecklistTemplate")
    item_model = apps.get_model("ops_app", "ChecklistItem")
    for order, (slug, section, title, groups) in enumerate(CHECKLISTS, start=1):
        template, _ = template_model.objects.update_or_create(
            slug=slug, defaults={"section": section, "title": title, "order": order}
        )
        place = 0
        for group, items in groups:
            for text, verifier in items:
                place += 1
                item_model.objects.update_or_create(
                    template=template,
                    order=place,
                    defaults={"group": group, "text": text, "verifier": verifier},
                )


class Migration(migrations.Migration):
    dependencies = [("ops_app", "0003_deployment_checklists")]

    # Going back leaves the rows: the tables go with 0003, and runs keep their items.
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
