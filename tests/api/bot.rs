//! The Telegram bot end to end: updates from the fake Bot API (long polling and the webhook), each command,
//! who may do what, restarts in the middle of a batch, and a blocked bot disabling its contact.

use std::sync::Arc;
use std::time::Duration;

use commands::telegram_inbox::TelegramInbox;
use commands::{Commands, Metadata};
use domain::{Language, OutcomeFilter, Preferences};
use herald::Role;
use serde_json::{json, Value};
use uuid::Uuid;
use workers::bot::i18n::Answer;
use workers::bot::{Bot, BotMode, BotRunner};
use workers::{TelegramClient, TelegramConfig};

use crate::helpers::{
    fixture_with, spawn_app_configured, wait_until, Bus, Reply, TestApp, BOT_TOKEN,
};

fn message(update_id: i64, chat: (i64, &str), user: i64, text: &str, language: &str) -> Value {
    json!({"update_id": update_id, "message": {
        "message_id": update_id, "date": chrono::Utc::now().timestamp(), "text": text,
        "from": {"id": user, "is_bot": false, "first_name": "Ada", "language_code": language},
        "chat": {"id": chat.0, "type": chat.1}
    }})
}

fn press(update_id: i64, chat: i64, user: i64, data: &str) -> Value {
    json!({"update_id": update_id, "callback_query": {
        "id": format!("q{update_id}"), "data": data,
        "from": {"id": user, "is_bot": false, "first_name": "Ada"},
        "message": {"message_id": 1, "date": chrono::Utc::now().timestamp(), "chat": {"id": chat, "type": "private"}}
    }})
}

async fn bot_app() -> TestApp {
    spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.bot = Some(BotMode::Polling)
    })
    .await
}

/// Queue an update and wait for the bot's answer to it; returns the answer's text.
async fn say(app: &TestApp, update: Value) -> String {
    let before = app.telegram.calls().len();
    app.telegram.push_update(update);
    let telegram = app.telegram.clone();
    wait_until("the bot answers", Duration::from_secs(10), || {
        let telegram = telegram.clone();
        async move { telegram.calls().len() > before }
    })
    .await;
    app.telegram.calls()[before].text.clone()
}

async fn subscriber_with_code(app: &TestApp, name: &str, language: Language) -> (Uuid, String) {
    let commands = Commands::new(app.pool.clone());
    let preferences = Preferences {
        language,
        ..Preferences::default()
    };
    let id = commands
        .register_subscriber(name, preferences, &Metadata::new())
        .await
        .unwrap();
    let (code, _) = commands
        .issue_link_code(id, &Metadata::new())
        .await
        .unwrap();
    (id, code)
}

async fn wait_projected(app: &TestApp, sql: &str) {
    let pool = app.pool.clone();
    let sql = sql.to_owned();
    wait_until(&sql.clone(), Duration::from_secs(10), || {
        let (pool, sql) = (pool.clone(), sql.clone());
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                > 0
        }
    })
    .await;
}

#[tokio::test]
async fn a_chat_links_subscribes_lists_mutes_and_asks_for_status() {
    let app = bot_app().await;
    let project = app.create_project("api").await;
    let (subscriber, code) = subscriber_with_code(&app, "Ada", Language::En).await;
    let chat = (4242, "private");
    let en = Language::En;

    let linked = say(
        &app,
        message(1, chat, 4242, &format!("/start {code}"), "en"),
    )
    .await;
    assert_eq!(linked, Answer::Linked { subscriber: "Ada" }.render(en));
    wait_projected(&app, "SELECT count(*) FROM contacts WHERE chat_id = 4242").await;

    let subscribed = say(&app, message(2, chat, 4242, "/subscribe api", "en")).await;
    let defaults = [OutcomeFilter::Failed, OutcomeFilter::Fixed];
    let expected = Answer::Subscribed {
        project: "api",
        branch: None,
        outcomes: &defaults,
    };
    assert_eq!(subscribed, expected.render(en));
    wait_projected(
        &app,
        &format!(
            "SELECT count(*) FROM subscriptions WHERE active AND subscriber_id = '{subscriber}'"
        ),
    )
    .await;
    let again = say(&app, message(3, chat, 4242, "/subscribe API", "en")).await;
    assert_eq!(
        again,
        Answer::AlreadySubscribed { project: "api" }.render(en)
    );

    let listed = say(&app, message(4, chat, 4242, "/list", "en")).await;
    assert!(
        listed.contains("api") && listed.contains("failed"),
        "{listed}"
    );

    say(&app, message(5, chat, 4242, "/mute 1h", "en")).await;
    wait_projected(
        &app,
        &format!("SELECT count(*) FROM subscribers WHERE muted AND muted_until > now() + interval '50 minutes' AND subscriber_id = '{subscriber}'"),
    )
    .await;
    let unmuted = say(&app, message(6, chat, 4242, "/unmute", "en")).await;
    assert_eq!(unmuted, Answer::Unmuted.render(en));
    wait_projected(
        &app,
        &format!(
            "SELECT count(*) FROM subscribers WHERE NOT muted AND subscriber_id = '{subscriber}'"
        ),
    )
    .await;

    let status = say(&app, message(7, chat, 4242, "/status nope", "en")).await;
    assert_eq!(
        status,
        Answer::UnknownProject { project: "nope" }.render(en)
    );
    let unknown = say(&app, message(8, chat, 4242, "/frobnicate", "en")).await;
    assert!(unknown.contains("frobnicate"), "{unknown}");

    // A failed build reaches the linked chat, with buttons that work.
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    let before = app.telegram.calls().len();
    app.post_github(&project, "workflow_run", &body, "bot-fail-1")
        .await;
    let telegram = app.telegram.clone();
    wait_until("the failure is announced", Duration::from_secs(10), || {
        let telegram = telegram.clone();
        async move { telegram.calls().len() > before }
    })
    .await;
    let announced = app.telegram.calls()[before].clone();
    assert_eq!(announced.chat_id, 4242);
    let mute = announced
        .buttons
        .iter()
        .find(|(_, data)| data.starts_with("mute"))
        .expect("a mute button")
        .1
        .clone();
    say(&app, press(9, 4242, 4242, &mute)).await;
    assert_eq!(app.telegram.calls_of("answerCallbackQuery").len(), 1);
    wait_projected(
        &app,
        &format!("SELECT count(*) FROM subscribers WHERE muted AND subscriber_id = '{subscriber}'"),
    )
    .await;
    // Muted: the next failure is decided, and suppressed with the reason.
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["id"] = 289782452.into();
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    app.post_github(&project, "workflow_run", &body, "bot-fail-2")
        .await;
    wait_projected(
        &app,
        "SELECT count(*) FROM notifications WHERE status = 'suppressed' AND reason = 'muted'",
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn answers_come_in_the_subscribers_language_and_strangers_change_nothing() {
    let app = bot_app().await;
    app.create_project("web").await;
    // An unlinked chat is told to link first, in the sender's language.
    let before = app.event_count().await;
    let refused = say(
        &app,
        message(1, (555, "private"), 555, "/subscribe web", "de"),
    )
    .await;
    assert_eq!(refused, Answer::NotLinked.render(Language::De));
    let bad_code = say(
        &app,
        message(2, (555, "private"), 555, "/start x_nope", "de"),
    )
    .await;
    assert_ne!(bad_code, Answer::Welcome.render(Language::De));
    assert_eq!(app.event_count().await, before, "strangers change nothing");

    // A German subscriber gets German answers, whatever their Telegram says.
    let (_, code) = subscriber_with_code(&app, "Grete", Language::De).await;
    say(
        &app,
        message(3, (556, "private"), 556, &format!("/start {code}"), "en"),
    )
    .await;
    wait_projected(&app, "SELECT count(*) FROM contacts WHERE chat_id = 556").await;
    let help = say(&app, message(4, (556, "private"), 556, "/help", "en")).await;
    assert_eq!(help, Answer::Help.render(Language::De));
    // The code was used up: another chat cannot take it.
    let reused = say(
        &app,
        message(5, (557, "private"), 557, &format!("/start {code}"), "en"),
    )
    .await;
    assert_eq!(reused, Answer::LinkCodeInvalid.render(Language::En));
    app.finish().await;
}

#[tokio::test]
async fn in_a_group_only_administrators_change_subscriptions() {
    let app = bot_app().await;
    app.create_project("ops").await;
    let group = (-100777, "supergroup");
    let (_, code) = subscriber_with_code(&app, "Ops team", Language::En).await;
    let refused = say(&app, message(1, group, 1, &format!("/start {code}"), "en")).await;
    assert_eq!(refused, Answer::NotAllowed.render(Language::En));
    app.telegram.make_admin(-100777, 2);
    say(&app, message(2, group, 2, &format!("/start {code}"), "en")).await;
    wait_projected(
        &app,
        "SELECT count(*) FROM contacts WHERE chat_id = -100777",
    )
    .await;
    let member = say(&app, message(3, group, 1, "/subscribe ops", "en")).await;
    assert_eq!(member, Answer::NotAllowed.render(Language::En));
    // Reading is for everyone in the group; chatter and other bots' commands get no answer.
    let listed = say(&app, message(4, group, 1, "/list", "en")).await;
    assert_eq!(listed, Answer::List { items: &[] }.render(Language::En));
    app.telegram
        .push_update(message(5, group, 1, "nice build!", "en"));
    app.telegram
        .push_update(message(6, group, 1, "/help@other_bot", "en"));
    let calls = app.telegram.calls().len();
    let admin = say(
        &app,
        message(7, group, 2, "/subscribe@herald_test_bot ops", "en"),
    )
    .await;
    assert!(admin.contains("ops"), "{admin}");
    assert_eq!(
        app.telegram.calls().len(),
        calls + 1,
        "updates 5 and 6 got no answer"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_batch_neither_drops_nor_repeats_a_command() {
    // Herald without the bot: the test plays the bot process, stopping it half way through a batch.
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |_| {}).await;
    app.create_project("batch").await;
    let (subscriber, code) = subscriber_with_code(&app, "Batch", Language::En).await;
    let commands = Arc::new(Commands::new(app.pool.clone()));
    let client = || {
        Arc::new(
            TelegramClient::new(TelegramConfig {
                api_url: app.telegram.url.clone(),
                bot_token: BOT_TOKEN.into(),
                timeout: Duration::from_secs(5),
            })
            .unwrap(),
        )
    };
    let runner = |client: Arc<TelegramClient>| {
        let bot = Bot::new(
            commands.clone(),
            client.clone(),
            Some("herald_test_bot".into()),
        );
        let mut runner = BotRunner::new(
            bot,
            client,
            TelegramInbox::new(app.pool.clone()),
            BotMode::Polling,
        );
        runner.long_poll = Duration::from_secs(0);
        runner
    };
    let chat = (31, "private");
    let start = message(10, chat, 31, &format!("/start {code}"), "en");
    let mute = message(11, chat, 31, "/mute 2h", "en");
    app.telegram.push_update(start.clone());
    app.telegram.push_update(mute.clone());
    app.telegram
        .push_update(message(12, chat, 31, "/help", "en"));

    // The first process fetches the whole batch and handles only its first update before it dies.
    let first = runner(client());
    assert_eq!(first.poll_once().await.unwrap(), 3);
    let inbox = TelegramInbox::new(app.pool.clone());
    let (id, update) = inbox.pending(1).await.unwrap().remove(0);
    Bot::new(commands.clone(), client(), None)
        .handle(&update)
        .await
        .unwrap();
    inbox.mark_handled(id).await.unwrap();
    drop(first);
    wait_projected(&app, "SELECT count(*) FROM contacts WHERE chat_id = 31").await;

    // The next process asks Telegram from past the stored batch: nothing is fetched twice, nothing is lost.
    let second = runner(client());
    assert_eq!(second.poll_once().await.unwrap(), 0);
    assert_eq!(app.telegram.unconfirmed_updates(), 0);
    assert_eq!(second.handle_pending().await.unwrap(), 2);
    assert_eq!(second.handle_pending().await.unwrap(), 0);
    let answers: Vec<String> = app.telegram.calls().into_iter().map(|m| m.text).collect();
    assert_eq!(answers.len(), 3, "one answer per command: {answers:?}");
    assert_eq!(answers[2], Answer::Help.render(Language::En));
    let mutes: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM events WHERE aggregate_id = '{subscriber}' AND event_type = 'Muted'"
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mutes, 1);

    // Handling an update again (a crash after its command, before it was marked) records nothing new.
    let before = app.event_count().await;
    let bot = Bot::new(commands.clone(), client(), None);
    bot.handle(&mute).await.unwrap();
    bot.handle(&start).await.unwrap();
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

#[tokio::test]
async fn the_webhook_takes_updates_only_with_the_secret_token() {
    let secret = "s3cret-token_for-tests";
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.bot = Some(BotMode::Webhook {
            url: "http://herald.test/api/v1/telegram/webhook".into(),
            secret: secret.into(),
        })
    })
    .await;
    let url = app.url("/api/v1/telegram/webhook");
    let update = message(900, (77, "private"), 77, "/help", "en");
    for wrong in [None, Some("nope")] {
        let mut request = app.anonymous.post(&url).json(&update);
        if let Some(token) = wrong {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let no_id = app
        .anonymous
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(&json!({"message": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_id.status(), 422);
    let accepted = app
        .anonymous
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let telegram = app.telegram.clone();
    wait_until(
        "the webhook update is answered",
        Duration::from_secs(10),
        || {
            let telegram = telegram.clone();
            async move { !telegram.calls().is_empty() }
        },
    )
    .await;
    assert_eq!(
        app.telegram.calls()[0].text,
        Answer::Help.render(Language::En)
    );
    let registered = app.telegram.calls_of("setWebhook");
    assert_eq!(registered[0]["secret_token"], secret);
    assert_eq!(
        registered[0]["url"],
        "http://herald.test/api/v1/telegram/webhook"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_bot_blocked_by_the_chat_disables_the_contact() {
    let app = bot_app().await;
    let project = app.create_project("blocked").await;
    let (_, code) = subscriber_with_code(&app, "Gone", Language::En).await;
    say(
        &app,
        message(1, (88, "private"), 88, &format!("/start {code}"), "en"),
    )
    .await;
    wait_projected(&app, "SELECT count(*) FROM contacts WHERE chat_id = 88").await;
    say(
        &app,
        message(2, (88, "private"), 88, "/subscribe blocked failed", "en"),
    )
    .await;
    wait_projected(
        &app,
        "SELECT count(*) FROM subscriptions WHERE active AND contact_id IS NOT NULL",
    )
    .await;
    app.telegram.script([Reply::Blocked]);
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    app.post_github(&project, "workflow_run", &body, "blocked-1")
        .await;
    wait_projected(
        &app,
        "SELECT count(*) FROM contacts WHERE chat_id = 88 AND NOT enabled AND disabled_reason LIKE 'telegram_forbidden%'",
    )
    .await;
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["id"] = 289782453.into();
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    app.post_github(&project, "workflow_run", &body, "blocked-2")
        .await;
    wait_projected(
        &app,
        "SELECT count(*) FROM notifications WHERE reason = 'contact_disabled'",
    )
    .await;
    app.finish().await;
}

#[tokio::test]
async fn a_forum_topic_is_its_own_contact_and_gets_its_own_messages() {
    let app = bot_app().await;
    let project = app.create_project("forum").await;
    app.telegram.make_admin(-100900, 5);
    let (_, code) = subscriber_with_code(&app, "Forum", Language::En).await;
    let in_topic = |update_id: i64, text: &str| {
        let mut update = message(update_id, (-100900, "supergroup"), 5, text, "en");
        update["message"]["is_topic_message"] = json!(true);
        update["message"]["message_thread_id"] = json!(42);
        update
    };
    say(&app, in_topic(1, &format!("/start {code}"))).await;
    wait_projected(
        &app,
        "SELECT count(*) FROM contacts WHERE chat_id = -100900 AND topic_id = 42",
    )
    .await;
    let answer = say(&app, in_topic(2, "/subscribe forum failed")).await;
    assert!(answer.contains("forum"), "{answer}");
    assert_eq!(
        app.telegram.calls().last().unwrap().topic_id,
        Some(42),
        "answers go to the topic"
    );
    wait_projected(
        &app,
        "SELECT count(*) FROM subscriptions WHERE active AND contact_id IS NOT NULL",
    )
    .await;
    let before = app.telegram.calls().len();
    let body = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    app.post_github(&project, "workflow_run", &body, "forum-1")
        .await;
    let telegram = app.telegram.clone();
    wait_until(
        "the failure reaches the topic",
        Duration::from_secs(10),
        || {
            let telegram = telegram.clone();
            async move { telegram.calls().len() > before }
        },
    )
    .await;
    let announced = app.telegram.calls()[before].clone();
    assert_eq!((announced.chat_id, announced.topic_id), (-100900, Some(42)));
    app.finish().await;
}
