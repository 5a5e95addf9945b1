// A second, independent ONVIF client for the tests: the npm package `onvif` (0.8), as Node.js NVR software uses it.
// usage: node tests/onvif_client.js PORT USER PASSWORD
// Connects (GetSystemDateAndTime, GetServices, GetProfiles, GetVideoSources), prints {"profiles": [...]} once it
// holds a PullPoint subscription, then pulls once (the test sends a detection meanwhile), prints
// {"messages": [...]} and unsubscribes. Errors: {"error": "..."} and exit status 2.
const { Cam } = require('onvif');

const [port, username, password] = process.argv.slice(2);
const fail = (err) => { console.log(JSON.stringify({ error: String((err && err.message) || err) })); process.exit(2); };

new Cam({ hostname: '127.0.0.1', port: Number(port), username, password, timeout: 20000 }, function (err) {
  if (err) return fail(err);
  const cam = this;
  cam.createPullPointSubscription(function (err) {
    if (err) return fail(err);
    console.log(JSON.stringify({ profiles: (cam.profiles || []).map((p) => p.$.token) }));
    cam.pullMessages({ messageLimit: 100 }, function (err, data) {
      if (err) return fail(err);
      console.log(JSON.stringify({ messages: [].concat(data.notificationMessage || []) }));
      cam.unsubscribe(() => process.exit(0));
    });
  });
});
