//! A small W3C WebDriver client over reqwest: starts Debian's `chromedriver`, opens a
//! headless Chromium session, and drives it (navigate, find, click, type, read, screenshot).
//! Enough for the console's browser test; no WebDriver crate needed.

use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Result<Browser, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for chromedriver: {e}"))?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start chromedriver ({e}): install Debian's chromium and chromium-driver"
                )
            })?;
        let mut browser = Browser {
            http: reqwest::Client::new(),
            session: format!("http://127.0.0.1:{port}"),
            driver,
        };
        let base = browser.session.clone();
        let started = Instant::now();
        loop {
            let ready = browser.http.get(format!("{base}/status")).send().await;
            if let Ok(answer) = ready
                && let Ok(status) = answer.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(15) {
                return Err("chromedriver did not answer /status within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut options = json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1280,1000"]});
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let answer = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome", "goog:chromeOptions": options}}})),
            )
            .await?;
        let id = answer["sessionId"]
            .as_str()
            .ok_or_else(|| format!("chromedriver opened no session: {answer}"))?;
        browser.session = format!("{base}/session/{id}");
        // `find` waits up to 5 s for an element the next page is still rendering.
        browser.post("/timeouts", json!({"implicit": 5000})).await?;
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| format!("chromedriver did not answer: {e}"))?;
        let ok = answer.status().is_success();
        let value: Value = answer
            .json()
            .await
            .map_err(|e| format!("chromedriver's answer is not JSON: {e}"))?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        match ok {
            true => Ok(value),
            false => Err(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            )),
        }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(
            reqwest::Method::GET,
            &format!("{}{path}", self.session),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(
            reqwest::Method::POST,
            &format!("{}{path}", self.session),
            Some(body),
        )
        .await
    }

    /// Loads `url` and waits for the page.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    /// The page's URL.
    pub async fn current_url(&self) -> Result<String, String> {
        Ok(self.get("/url").await?.as_str().unwrap_or("").to_string())
    }

    /// Waits (up to 10 s) until the page's URL ends with `part`, as after a click that
    /// submits a form; returns the URL.
    pub async fn wait_for_url(&self, part: &str) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let url = self.current_url().await?;
            if url.ends_with(part) {
                return Ok(url);
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the page is still {url}, not one ending with {part}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's HTML as the browser holds it.
    pub async fn source(&self) -> Result<String, String> {
        Ok(self
            .get("/source")
            .await?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    /// The first element `css` matches.
    pub async fn find(&self, css: &str) -> Result<Element, String> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await
            .map_err(|e| format!("no element matches `{css}` ({e})"))?;
        element(&found).ok_or_else(|| format!("no element matches `{css}`"))
    }

    /// Every element `css` matches.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(found
            .as_array()
            .map(|all| all.iter().filter_map(element).collect())
            .unwrap_or_default())
    }

    /// Clicks `element` (a link or a submit button loads the next page first).
    pub async fn click(&self, element: &Element) -> Result<(), String> {
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) -> Result<(), String> {
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> Result<String, String> {
        let text = self.get(&format!("/element/{}/text", element.0)).await?;
        Ok(text.as_str().unwrap_or("").to_string())
    }

    /// Resizes the window (a phone is 390 × 844).
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await
            .map(drop)
    }

    /// Saves a PNG of the viewport at `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let encoded = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or(""))
            .map_err(|e| format!("the screenshot is not base64: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The cookies of the page, as WebDriver lists them (`name`, `value`, `httpOnly`,
    /// `sameSite`…).
    pub async fn cookies(&self) -> Result<Vec<Value>, String> {
        Ok(self
            .get("/cookie")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Ends the session and stops chromedriver.
    pub async fn quit(mut self) -> Result<(), String> {
        let ended = self
            .call(reqwest::Method::DELETE, &self.session.clone(), None)
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        ended.map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test leaves no chromedriver (nor its Chromium) behind.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn element(value: &Value) -> Option<Element> {
    value[ELEMENT].as_str().map(|id| Element(id.to_string()))
}
