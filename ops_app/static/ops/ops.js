// The operations dashboard, live: the server pushes re-rendered sections over
// /ws/ops/ (feed.js swaps them in). Without it the page still works; it just does
// not update by itself.
import { startFeed } from "./feed.js";

startFeed();
