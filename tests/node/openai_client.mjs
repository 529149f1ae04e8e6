// The official openai npm client, unchanged, against a running `bitdelta serve`.
// usage: node openai_client.mjs PORT EXPECTED_JSON
//   EXPECTED_JSON: {"model": "zippy", "prompt": "...", "max_tokens": N, "text": "<greedy text>"}
// Prints one JSON line with what it saw; exits 1 with a message on the first mismatch.
import OpenAI from "openai";
import assert from "node:assert/strict";

const [port, expectedJson] = process.argv.slice(2);
const expected = JSON.parse(expectedJson);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });

try {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes("base") && ids.includes(expected.model), `models: ${ids}`);

  const completion = await client.completions.create({
    model: expected.model, prompt: expected.prompt, max_tokens: expected.max_tokens, temperature: 0,
  });
  assert.equal(completion.choices[0].text, expected.text, "non-streaming completion text");
  assert.equal(completion.usage.completion_tokens + completion.usage.prompt_tokens,
               completion.usage.total_tokens);

  const stream = await client.completions.create({
    model: expected.model, prompt: expected.prompt, max_tokens: expected.max_tokens, temperature: 0,
    stream: true,
  });
  let streamed = "";
  for await (const chunk of stream) streamed += chunk.choices[0]?.text ?? "";
  assert.equal(streamed, expected.text, "streamed completion text");

  const chat = await client.chat.completions.create({
    model: expected.model, messages: [{ role: "user", content: "Hello there." }], max_tokens: 20,
    temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let reply = "", usage = null, finish = null;
  for await (const chunk of chat) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      reply += choice.delta?.content ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.ok(usage && usage.completion_tokens > 0, "streamed chat usage");
  assert.ok(finish === "stop" || finish === "length", `finish_reason ${finish}`);
  const whole = await client.chat.completions.create({
    model: expected.model, messages: [{ role: "user", content: "Hello there." }], max_tokens: 20,
    temperature: 0,
  });
  assert.equal(whole.choices[0].message.content, reply, "chat: streamed == whole");

  let status = 0;
  try {
    await client.completions.create({ model: "no-such-user", prompt: "x", max_tokens: 2 });
  } catch (error) {
    status = error.status;
    assert.ok(error instanceof OpenAI.NotFoundError, `error class ${error.constructor.name}`);
  }
  assert.equal(status, 404, "unknown model");
  console.log(JSON.stringify({ models: ids, text: completion.choices[0].text, chat: reply, usage }));
} catch (error) {
  console.error(`openai client test failed: ${error.message}`);
  process.exit(1);
}
