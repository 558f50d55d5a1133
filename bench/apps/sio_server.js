// Peer: Socket.IO 4.8 (Node) with the Redis streams adapter, WebSocket transport only.
// Events: "sub" (room) -> join, reply "subscribed"; "pub" ({ch, text}) -> "msg" to the room.
//   node sio_server.js PORT REDIS_URL   (run with NODE_PATH pointing at bench/.peers/node/node_modules)
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

async function main() {
  const port = Number(process.argv[2]);
  const redis = createClient({ url: process.argv[3] });
  await redis.connect();
  const httpServer = createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(redis),
    transports: ["websocket"],
    cors: { origin: "*" },
  });
  io.on("connection", (socket) => {
    socket.on("sub", (room) => {
      socket.join(room);
      socket.emit("subscribed", room);
    });
    socket.on("pub", (data) => {
      io.to(data.ch).emit("msg", data);
    });
  });
  httpServer.listen(port, "127.0.0.1");
  const stop = () => { io.close(); redis.quit().finally(() => process.exit(0)); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
