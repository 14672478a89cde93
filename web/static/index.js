// The index page: while nothing is live (body[data-refresh] is set), reload
// every few seconds to show streams as they start, unless the user is
// filling in the publish form. Without JavaScript a <noscript> meta
// refresh does the same, form or not.
const secs = Number(document.body.dataset.refresh || 0);
if (secs > 0) {
  const form = document.querySelector('form.publish-form');
  let touched = false;
  if (form) {
    form.addEventListener('input', () => { touched = true; });
    form.addEventListener('focusin', () => { touched = true; });
  }
  setInterval(() => {
    if (!touched && document.visibilityState === 'visible') location.reload();
  }, secs * 1000);
}
