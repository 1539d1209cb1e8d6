-- Chat-group robots (WeCom, DingTalk, Feishu) are webhooks of another format: the same queue, claims,
-- leases, retries and delivery log, a message of the robot's kind in place of the JSON body, and a limit
-- of per_minute messages in any window_s seconds that a robot must never see exceeded.

ALTER TABLE webhooks
    ADD COLUMN format text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'wecom', 'dingtalk', 'feishu')),
    ADD COLUMN message text NOT NULL DEFAULT '',
    ADD COLUMN mention_userids text[] NOT NULL DEFAULT '{}',
    ADD COLUMN mention_mobiles text[] NOT NULL DEFAULT '{}',
    ADD COLUMN per_minute integer NOT NULL DEFAULT 20 CHECK (per_minute > 0),
    ADD COLUMN window_s double precision NOT NULL DEFAULT 60 CHECK (window_s > 0);

-- parts_sent: the messages of a delivery the robot already took (a WeCom alert is its text, then its picture),
-- so a retry sends only the rest. folded: held back by the robot's limit, it goes (or went) within a summary
-- message, not a message of its own.
ALTER TABLE webhook_deliveries
    ADD COLUMN parts_sent integer NOT NULL DEFAULT 0,
    ADD COLUMN folded boolean NOT NULL DEFAULT false;

-- Each message sent to a robot, or about to be: the limiter's accounting, shared by every dispatcher. A
-- message in flight counts from its reservation until its lease ends; once answered, from its answer.
CREATE TABLE robot_sends (
    id bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    at timestamptz NOT NULL
);
CREATE INDEX robot_sends_window ON robot_sends (webhook_id, at);
