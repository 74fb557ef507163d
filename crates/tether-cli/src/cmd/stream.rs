//! `tether stream`: call a route that opens a stream, then copy stdin to the stream and the
//! stream to stdout until the server closes it.

use tokio::io::AsyncWriteExt;

use super::Failure;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The call to a route that opens a stream (url, --set, --param, --data-base64, ...).
    #[command(flatten)]
    rpc: super::call::RpcArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let (client, reply) = args.rpc.send().await?;
    let url = &args.rpc.url;
    if reply.tunid == 0 {
        return Err(Failure {
            message: format!(
                "{} opened no stream (reply status {})",
                url.path, reply.status
            ),
            code: crate::cmd::exit::OTHER,
        });
    }
    let stream = client.connect_stream(reply.tunid).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let upload = async move {
        let mut stdin = tokio::io::stdin();
        let copied = tokio::io::copy(&mut stdin, &mut wr).await;
        let _ = wr.shutdown().await;
        copied
    };
    let download = async move {
        let mut stdout = tokio::io::stdout();
        let copied = tokio::io::copy(&mut rd, &mut stdout).await;
        let _ = stdout.flush().await;
        copied
    };
    // The server closing the stream ends the command, whatever stdin is doing.
    let upload = tokio::spawn(upload);
    let received = download.await;
    upload.abort();
    received.map_err(|e| Failure {
        message: format!("stream from {} failed: {e}", url),
        code: crate::cmd::exit::UNREACHABLE,
    })?;
    Ok(())
}
