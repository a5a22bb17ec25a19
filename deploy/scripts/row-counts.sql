-- The tables a restore is checked by (backup-postgres.sh, restore-postgres.sh), one
-- "name count" line each, in this order.
SELECT 'migrations', count(*) FROM django_migrations
UNION ALL SELECT 'sessions', count(*) FROM sessions_app_voicesession
UNION ALL SELECT 'transcript_items', count(*) FROM sessions_app_conversationitem
UNION ALL SELECT 'audit_events', count(*) FROM ops_app_auditevent;
