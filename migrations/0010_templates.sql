-- Notification templates: the current version of each template id, and every version ever saved. Both are read
-- models of the `Template` aggregate and can be rebuilt from the log. `parts` is NULL for a built-in version (a
-- reset): it means "the built-in text of the running Herald", which the application fills in.

CREATE TABLE templates
(
    template_id text PRIMARY KEY,
    version     integer     NOT NULL,
    parts       jsonb,
    source      text        NOT NULL CHECK (source IN ('custom', 'builtin')),
    saved_by    text        NOT NULL,
    saved_at    timestamptz NOT NULL
);

CREATE TABLE template_versions
(
    template_id text        NOT NULL,
    version     integer     NOT NULL,
    parts       jsonb,
    source      text        NOT NULL CHECK (source IN ('custom', 'builtin')),
    saved_by    text        NOT NULL,
    saved_at    timestamptz NOT NULL,
    PRIMARY KEY (template_id, version)
);
