//! `lab chat`: an interactive line client. Each stdin line is sent to the
//! room; chats are printed as `nick: body`. It is a `ResilientClient`, so it
//! also shows reconnects and resumes the way the protocol intends.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::resilient::{Event, ResilientClient, ResilientConfig};
use crate::tls::{self, TlsError};
use crate::{ClientError, ConnectOptions};

/// Why `lab chat` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The URL or options are unusable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The CA file is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// stdin failed.
    #[error("stdin: {0}")]
    Stdin(#[from] std::io::Error),
}

/// What `lab chat` was asked for.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// `ws://` or `wss://` URL with path.
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Nick to use.
    pub nick: String,
    /// CA to trust for `wss://`.
    pub ca: Option<PathBuf>,
}

/// Runs until stdin ends.
pub async fn run(opts: ChatOptions) -> Result<(), ChatError> {
    let mut connect = ConnectOptions::new(&opts.url)?.room(opts.room.clone());
    if let Some(ca) = &opts.ca {
        connect = connect.tls(tls::client_config(ca)?);
    }
    let mut config = ResilientConfig::new(connect);
    config.nick = Some(opts.nick.clone());
    let mut client = ResilientClient::spawn(config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    client.send(line);
                }
                None => return Ok(()),
            },
            event = client.next_event() => match event {
                Some(event) => print_event(&event),
                None => return Ok(()),
            },
        }
    }
}

fn print_event(event: &Event) {
    match event {
        Event::Connected(c) => println!("-- connected to {} as {}", c.instance, c.nick),
        Event::Chat(c) => println!("{}: {}", c.nick, c.body),
        Event::Refused(code) => println!("-- refused: {}", code.as_str()),
        Event::Disconnected(code) => println!("-- disconnected ({code:?}); reconnecting"),
        Event::Acked { .. } => {}
    }
}
