/**
 * The slice of an AWS SDK v3 client the transports use, and the one entry of a batch as both
 * PublishBatch and SendMessageBatch answer it.
 *
 * @module
 */

/** An `SQSClient` or `SNSClient`: `send(command, { abortSignal })`, and `destroy()` for ours. */
export interface AwsClientLike {
  send(command: unknown, options?: { abortSignal?: AbortSignal }): Promise<unknown>;
  destroy?(): void;
  /** The SDK client's resolved config; the region provider is read when the URL names none. */
  config?: { region?: unknown };
}

/** A batch's answer: entries taken and entries refused, by the entry `Id` sent. */
export interface AwsBatchAnswer {
  Successful?: Array<{ Id?: string | undefined }> | undefined;
  Failed?:
    | Array<{
        Id?: string | undefined;
        SenderFault?: boolean | undefined;
        Code?: string | undefined;
        Message?: string | undefined;
      }>
    | undefined;
}

/** The region the client resolved (its config's provider), or undefined when it has none. */
export async function clientRegion(client: AwsClientLike): Promise<string | undefined> {
  const region = client.config?.region;
  try {
    const value = typeof region === 'function' ? await (region as () => Promise<unknown>)() : region;
    return typeof value === 'string' && value !== '' ? value : undefined;
  } catch {
    return undefined;
  }
}
