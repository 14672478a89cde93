//go:build cgo

package av

/*
#cgo pkg-config: libavcodec libavutil
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <libavcodec/avcodec.h>
#include <libavutil/dict.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/mem.h>
#include <libavutil/pixdesc.h>
#include <libavutil/pixfmt.h>

enum {
	bvid_eagain = AVERROR(EAGAIN),
	bvid_eof = AVERROR_EOF,
	bvid_enomem = AVERROR(ENOMEM),
	bvid_optnf = AVERROR_OPTION_NOT_FOUND,
};

// ---- pictures

static void bvframe_free(AVFrame *f) { av_frame_free(&f); }

static int64_t bvframe_pts(const AVFrame *f) {
	return f->pts != AV_NOPTS_VALUE ? f->pts : f->best_effort_timestamp;
}

static int bvframe_key(const AVFrame *f) {
#ifdef AV_FRAME_FLAG_KEY
	return (f->flags & AV_FRAME_FLAG_KEY) != 0;
#else
	return f->key_frame;
#endif
}

static int bvframe_full_range(const AVFrame *f) {
	return f->color_range == AVCOL_RANGE_JPEG || f->format == AV_PIX_FMT_YUVJ420P ||
		f->format == AV_PIX_FMT_YUVJ422P || f->format == AV_PIX_FMT_YUVJ444P;
}

// bvframe_new allocates a yuv420p picture of w x h filled with a pattern
// that moves with seed (for tests).
static int bvframe_new(AVFrame **out, int w, int h, int seed) {
	AVFrame *f = av_frame_alloc();
	if (!f) return AVERROR(ENOMEM);
	f->format = AV_PIX_FMT_YUV420P;
	f->width = w;
	f->height = h;
	int ret = av_frame_get_buffer(f, 0);
	if (ret < 0) {
		av_frame_free(&f);
		return ret;
	}
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++)
			f->data[0][y*f->linesize[0] + x] = (uint8_t)(((x + seed) ^ y) & 0xff);
	for (int p = 1; p < 3; p++)
		for (int y = 0; y < (h+1)/2; y++)
			memset(f->data[p] + y*f->linesize[p], 128, (w+1)/2);
	*out = f;
	return 0;
}

// bvframe_luma copies the 8-bit luma plane (w x h bytes) of a yuv420p or
// yuvj420p picture to out.
static int bvframe_luma(const AVFrame *f, uint8_t *out) {
	if (f->format != AV_PIX_FMT_YUV420P && f->format != AV_PIX_FMT_YUVJ420P) return AVERROR(ENOSYS);
	for (int y = 0; y < f->height; y++) memcpy(out + (size_t)y*f->width, f->data[0] + (ptrdiff_t)y*f->linesize[0], f->width);
	return 0;
}

// ---- decoder

typedef struct {
	AVCodecContext *ctx;
	AVPacket *pkt;
	AVFrame *frame;
} bvdec;

static void bvdec_free(bvdec *d) {
	if (!d) return;
	avcodec_free_context(&d->ctx);
	av_packet_free(&d->pkt);
	av_frame_free(&d->frame);
	av_free(d);
}

// bvdec_get_format refuses a coded picture larger than the decoder's
// max_pixels. FFmpeg checks max_pixels against the cropped size only, so
// an SPS cropping a 16000x8000 picture down to 16x8000 passes it and still
// costs 16000x8000 per picture; libavcodec asks get_format before it
// allocates anything for a new size.
static enum AVPixelFormat bvdec_get_format(AVCodecContext *ctx, const enum AVPixelFormat *fmts) {
	if ((int64_t)ctx->coded_width * ctx->coded_height > ctx->max_pixels) {
		return AV_PIX_FMT_NONE;
	}
	return avcodec_default_get_format(ctx, fmts);
}

static int bvdec_open(bvdec **out, const uint8_t *extra, int extra_len, int64_t max_pixels) {
	const AVCodec *c = avcodec_find_decoder(AV_CODEC_ID_H264);
	if (!c) return AVERROR_DECODER_NOT_FOUND;
	bvdec *d = av_mallocz(sizeof(*d));
	if (!d) return AVERROR(ENOMEM);
	d->ctx = avcodec_alloc_context3(c);
	d->pkt = av_packet_alloc();
	d->frame = av_frame_alloc();
	if (!d->ctx || !d->pkt || !d->frame) {
		bvdec_free(d);
		return AVERROR(ENOMEM);
	}
	d->ctx->pkt_timebase = (AVRational){1, 90000};
	// One thread: frame threading would add a frame of delay per thread.
	d->ctx->thread_count = 1;
	d->ctx->max_pixels = max_pixels;
	d->ctx->get_format = bvdec_get_format;
	if (extra_len > 0) {
		d->ctx->extradata = av_mallocz(extra_len + AV_INPUT_BUFFER_PADDING_SIZE);
		if (!d->ctx->extradata) {
			bvdec_free(d);
			return AVERROR(ENOMEM);
		}
		memcpy(d->ctx->extradata, extra, extra_len);
		d->ctx->extradata_size = extra_len;
	}
	int ret = avcodec_open2(d->ctx, c, NULL);
	if (ret < 0) {
		bvdec_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

// bvdec_packet makes d->pkt a packet of len bytes (plus FFmpeg's padding)
// and returns where to write them, or NULL.
static uint8_t *bvdec_packet(bvdec *d, int len) {
	if (av_new_packet(d->pkt, len) < 0) return NULL;
	return d->pkt->data;
}

static int bvdec_send(bvdec *d, int64_t pts, int64_t dts) {
	d->pkt->pts = pts;
	d->pkt->dts = dts;
	int ret = avcodec_send_packet(d->ctx, d->pkt);
	av_packet_unref(d->pkt);
	return ret;
}

// bvdec_receive takes the next decoded picture into a new frame *out.
static int bvdec_receive(bvdec *d, AVFrame **out) {
	int ret = avcodec_receive_frame(d->ctx, d->frame);
	if (ret < 0) return ret;
	AVFrame *f = av_frame_alloc();
	if (!f) {
		av_frame_unref(d->frame);
		return AVERROR(ENOMEM);
	}
	av_frame_move_ref(f, d->frame);
	*out = f;
	return 0;
}

// ---- encoder

typedef struct {
	AVCodecContext *ctx;
	AVPacket *pkt;
	AVFrame *in;  // the reference sent to the encoder
	AVFrame *cvt; // yuv420p copy of pictures in other formats
} bvenc;

static void bvenc_free(bvenc *e) {
	if (!e) return;
	avcodec_free_context(&e->ctx);
	av_packet_free(&e->pkt);
	av_frame_free(&e->in);
	av_frame_free(&e->cvt);
	av_free(e);
}

static int bvenc_available(void) {
	return avcodec_find_encoder_by_name("libx264") != NULL && avcodec_find_decoder(AV_CODEC_ID_H264) != NULL;
}

// bvenc_open opens libx264 for w x h yuv420p pictures on a 90 kHz clock:
// Constrained Baseline (no B-frames, CAVLC), zero-latency tuning (no
// look-ahead: a packet out for every picture in), an IDR at least every
// gop pictures, SPS/PPS in front of every IDR, Annex-B. *bad is set to the
// first option FFmpeg did not take, if any.
static int bvenc_open(bvenc **out, int w, int h, int fps_num, int fps_den, int64_t bitrate,
		int gop, int threads, int full_range, char *bad, int bad_len) {
	const AVCodec *c = avcodec_find_encoder_by_name("libx264");
	if (!c) return AVERROR_ENCODER_NOT_FOUND;
	bvenc *e = av_mallocz(sizeof(*e));
	if (!e) return AVERROR(ENOMEM);
	e->ctx = avcodec_alloc_context3(c);
	e->pkt = av_packet_alloc();
	e->in = av_frame_alloc();
	if (!e->ctx || !e->pkt || !e->in) {
		bvenc_free(e);
		return AVERROR(ENOMEM);
	}
	AVCodecContext *ctx = e->ctx;
	ctx->width = w;
	ctx->height = h;
	ctx->pix_fmt = AV_PIX_FMT_YUV420P;
	ctx->color_range = full_range ? AVCOL_RANGE_JPEG : AVCOL_RANGE_MPEG;
	ctx->time_base = (AVRational){1, 90000};
	ctx->pkt_timebase = ctx->time_base;
	ctx->framerate = (AVRational){fps_num, fps_den};
	ctx->bit_rate = bitrate;
	// VBV: peaks bounded at the average rate over 1 s.
	ctx->rc_max_rate = bitrate;
	ctx->rc_buffer_size = (int)(bitrate > INT32_MAX ? INT32_MAX : bitrate);
	ctx->gop_size = gop;
	ctx->max_b_frames = 0;
	ctx->thread_count = threads;
	// No AV_CODEC_FLAG_GLOBAL_HEADER: SPS and PPS go in-band before every
	// IDR (libx264's repeat-headers), which is what RTP needs.
	AVDictionary *opts = NULL;
	av_dict_set(&opts, "preset", "veryfast", 0);
	av_dict_set(&opts, "tune", "zerolatency", 0);
	av_dict_set(&opts, "profile", "baseline", 0);
	av_dict_set(&opts, "forced-idr", "1", 0);
	av_dict_set(&opts, "x264-params", "repeat-headers=1:annexb=1:aud=0", 0);
	int ret = avcodec_open2(ctx, c, &opts);
	const AVDictionaryEntry *left = av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX);
	if (ret >= 0 && left) {
		snprintf(bad, bad_len, "%s", left->key);
		ret = AVERROR_OPTION_NOT_FOUND;
	}
	av_dict_free(&opts);
	if (ret < 0) {
		bvenc_free(e);
		return ret;
	}
	*out = e;
	return 0;
}

static inline int bv_sample(const uint8_t *row, int wide, int x) {
	return wide ? ((const uint16_t *)row)[x] : row[x];
}

// bvenc_convert writes src, a planar YUV or gray picture of 8 to 16 bits in
// native byte order, into e->cvt as 8-bit yuv420p, averaging chroma down to
// 4:2:0.
static int bvenc_convert(bvenc *e, const AVFrame *src) {
	const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(src->format);
	if (!desc || !(desc->flags & AV_PIX_FMT_FLAG_PLANAR) || (desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_BE | AV_PIX_FMT_FLAG_HWACCEL | AV_PIX_FMT_FLAG_PAL)))
		return AVERROR(ENOSYS);
	int depth = desc->comp[0].depth, ncomp = desc->nb_components;
	int gray = ncomp < 3;
	if (depth < 8 || depth > 16 || desc->comp[0].plane != 0 || (!gray && (desc->comp[1].plane != 1 || desc->comp[2].plane != 2)))
		return AVERROR(ENOSYS);
	int w = e->ctx->width, h = e->ctx->height;
	if (!e->cvt || e->cvt->width != w || e->cvt->height != h) {
		av_frame_free(&e->cvt);
		e->cvt = av_frame_alloc();
		if (!e->cvt) return AVERROR(ENOMEM);
		e->cvt->format = AV_PIX_FMT_YUV420P;
		e->cvt->width = w;
		e->cvt->height = h;
		int ret = av_frame_get_buffer(e->cvt, 0);
		if (ret < 0) {
			av_frame_free(&e->cvt);
			return ret;
		}
	}
	// The encoder may still hold the previous picture.
	int ret = av_frame_make_writable(e->cvt);
	if (ret < 0) return ret;
	AVFrame *dst = e->cvt;
	int wide = depth > 8, shift = depth - 8;
	for (int y = 0; y < h; y++) {
		const uint8_t *s = src->data[0] + (ptrdiff_t)y*src->linesize[0];
		uint8_t *d = dst->data[0] + (ptrdiff_t)y*dst->linesize[0];
		for (int x = 0; x < w; x++) d[x] = (uint8_t)(bv_sample(s, wide, x) >> shift);
	}
	int cw = desc->log2_chroma_w, chh = desc->log2_chroma_h;
	int sw = AV_CEIL_RSHIFT(src->width, cw), sh = AV_CEIL_RSHIFT(src->height, chh);
	for (int p = 1; p < 3; p++) {
		for (int y = 0; y < h/2; y++) {
			uint8_t *d = dst->data[p] + (ptrdiff_t)y*dst->linesize[p];
			if (gray) {
				memset(d, 128, w/2);
				continue;
			}
			int y0 = chh ? y : 2*y, y1 = chh ? y : FFMIN(2*y+1, sh-1);
			const uint8_t *r0 = src->data[p] + (ptrdiff_t)y0*src->linesize[p];
			const uint8_t *r1 = src->data[p] + (ptrdiff_t)y1*src->linesize[p];
			for (int x = 0; x < w/2; x++) {
				int x0 = cw ? x : 2*x, x1 = cw ? x : FFMIN(2*x+1, sw-1);
				int v = bv_sample(r0, wide, x0) + bv_sample(r0, wide, x1) + bv_sample(r1, wide, x0) + bv_sample(r1, wide, x1);
				d[x] = (uint8_t)(((v + 2) >> 2) >> shift);
			}
		}
	}
	return 0;
}

// bvenc_send sends picture src (NULL: end of stream) at pts, as an IDR if
// idr. It never changes src: it sends a new reference to it (or to its
// conversion) cropped to the encoder's size, without src's picture type
// and side data.
static int bvenc_send(bvenc *e, const AVFrame *src, int64_t pts, int idr) {
	if (!src) return avcodec_send_frame(e->ctx, NULL);
	int ret;
	if (src->format == AV_PIX_FMT_YUV420P || src->format == AV_PIX_FMT_YUVJ420P) {
		ret = av_frame_ref(e->in, src);
	} else {
		ret = bvenc_convert(e, src);
		if (ret >= 0) ret = av_frame_ref(e->in, e->cvt);
	}
	if (ret < 0) return ret;
	AVFrame *in = e->in;
	while (in->nb_side_data > 0) av_frame_remove_side_data(in, in->side_data[0]->type);
	in->format = AV_PIX_FMT_YUV420P;
	in->color_range = e->ctx->color_range;
	in->width = e->ctx->width;
	in->height = e->ctx->height;
	in->pts = pts;
	// A decoded picture carries its own type (B, say); libx264 would take
	// it as an order.
	in->pict_type = idr ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
#ifdef AV_FRAME_FLAG_KEY
	in->flags &= ~AV_FRAME_FLAG_KEY;
#else
	in->key_frame = 0;
#endif
	ret = avcodec_send_frame(e->ctx, in);
	av_frame_unref(in);
	return ret;
}

static int bvenc_key(const AVPacket *p) { return (p->flags & AV_PKT_FLAG_KEY) != 0; }

static void bvenc_set_bitrate(bvenc *e, int64_t bitrate) {
	// libx264 reconfigures itself from these before the next picture.
	e->ctx->bit_rate = bitrate;
	e->ctx->rc_max_rate = bitrate;
	e->ctx->rc_buffer_size = (int)(bitrate > INT32_MAX ? INT32_MAX : bitrate);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"
)

var (
	errVideoDecoderClosed = errors.New("av: video decoder is closed")
	errVideoEncoderClosed = errors.New("av: video encoder is closed")
)

var videoAvailable = sync.OnceValue(func() bool { return C.bvenc_available() != 0 })

// VideoAvailable reports whether H.264 can be re-encoded: FFmpeg is linked
// in, with its H.264 decoder and libx264.
func VideoAvailable() bool { return videoAvailable() }

// picture owns one AVFrame.
type picture struct {
	f       *C.AVFrame
	cleanup runtime.Cleanup
}

func (p *picture) released() bool { return p.f == nil }

func newVideoFrame(f *C.AVFrame, pts int64) VideoFrame {
	p := &picture{f: f}
	p.cleanup = runtime.AddCleanup(p, func(f *C.AVFrame) { C.bvframe_free(f) }, f)
	return VideoFrame{
		PTS:    pts,
		Width:  int(f.width),
		Height: int(f.height),
		Key:    C.bvframe_key(f) != 0,
		pic:    p,
	}
}

// Release frees the picture. It is idempotent, and also releases every
// copy of f.
func (f *VideoFrame) Release() {
	if p := f.pic; p != nil && p.f != nil {
		p.cleanup.Stop()
		C.bvframe_free(p.f)
		p.f = nil
	}
	f.pic = nil
}

// newTestFrame returns a yuv420p picture of w x h with a pattern that moves
// with seed.
func newTestFrame(w, h int, pts int64, seed int) (VideoFrame, error) {
	var f *C.AVFrame
	if ret := C.bvframe_new(&f, C.int(w), C.int(h), C.int(seed)); ret < 0 {
		return VideoFrame{}, avError("allocate picture", ret)
	}
	return newVideoFrame(f, pts), nil
}

// frameLuma returns a copy of the luma plane of a 4:2:0 8-bit picture.
func frameLuma(f VideoFrame) ([]byte, error) {
	if f.Released() {
		return nil, errFrameReleased
	}
	out := make([]byte, f.Width*f.Height)
	if ret := C.bvframe_luma(f.pic.f, (*C.uint8_t)(unsafe.Pointer(&out[0]))); ret < 0 {
		return nil, avError("luma", ret)
	}
	return out, nil
}

// VideoDecoder decodes one H.264 track into pictures. Not safe for
// concurrent use.
type VideoDecoder struct {
	c       *C.bvdec
	cleanup runtime.Cleanup
}

// NewVideoDecoder opens an H.264 decoder. sps and pps (NAL units without
// start codes; either may be nil when access units carry them in-band) are
// the parameter sets known in advance; later ones in access units replace
// them, including a change of resolution. A coded picture larger than
// MaxVideoPixels is refused, here for sps and by Decode for later ones.
func NewVideoDecoder(sps, pps []byte) (*VideoDecoder, error) {
	if err := checkSPSSize(sps); err != nil {
		return nil, err
	}
	var extra []byte
	if len(sps) > 0 && len(pps) > 0 {
		extra = make([]byte, 0, 8+len(sps)+len(pps))
		extra = append(append(append(extra, 0, 0, 0, 1), sps...), 0, 0, 0, 1)
		extra = append(extra, pps...)
	}
	var ex *C.uint8_t
	if len(extra) > 0 {
		ex = (*C.uint8_t)(unsafe.Pointer(&extra[0]))
	}
	var c *C.bvdec
	if ret := C.bvdec_open(&c, ex, C.int(len(extra)), MaxVideoPixels); ret < 0 {
		return nil, avError("open h264 decoder", ret)
	}
	d := &VideoDecoder{c: c}
	d.cleanup = runtime.AddCleanup(d, func(c *C.bvdec) { C.bvdec_free(c) }, c)
	return d, nil
}

// Decode decodes one access unit: its NAL units without start codes (empty
// ones are skipped), with its presentation and decoding times (90 kHz). It
// returns the pictures that became ready, in presentation order, each with
// the pts of the access unit it came from. With B-frames the decoder holds
// pictures back until their turn (up to the stream's reorder depth, e.g.
// two access units for x264's default B-pyramid), so a call may return no
// picture, or more than one; Flush returns the last ones.
//
// The caller owns the frames and must Release them. A corrupt access unit
// returns an error, and the decoder stays usable for the next one (until
// the next IDR, pictures may show errors); frames decoded before an error
// are returned with it. au is only read during the call. An access unit
// with an SPS declaring a picture over MaxVideoPixels is refused whole,
// before the decoder sees it.
func (d *VideoDecoder) Decode(au [][]byte, pts, dts int64) ([]VideoFrame, error) {
	if d.c == nil {
		return nil, errVideoDecoderClosed
	}
	size := 0
	for _, n := range au {
		if len(n) > 0 {
			size += 4 + len(n)
		}
		if err := checkSPSSize(n); err != nil {
			return nil, err
		}
	}
	if size == 0 {
		return nil, nil
	}
	if size > math.MaxInt32-C.AV_INPUT_BUFFER_PADDING_SIZE {
		return nil, fmt.Errorf("av: decode h264: access unit of %d bytes", size)
	}
	defer runtime.KeepAlive(d)
	p := C.bvdec_packet(d.c, C.int(size))
	if p == nil {
		return nil, avError("decode h264", C.bvid_enomem)
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(p)), size)
	off := 0
	for _, n := range au {
		if len(n) > 0 {
			off += copy(buf[off:], []byte{0, 0, 0, 1})
			off += copy(buf[off:], n)
		}
	}
	if ret := C.bvdec_send(d.c, C.int64_t(pts), C.int64_t(dts)); ret < 0 {
		// The decoder takes no new input while output waits only if we
		// failed to drain it; we always drain, so this is the packet's
		// fault. Still hand out what is ready.
		frames, _ := d.receive(nil)
		return frames, avError("decode h264", ret)
	}
	return d.receive(nil)
}

func (d *VideoDecoder) receive(out []VideoFrame) ([]VideoFrame, error) {
	for {
		var f *C.AVFrame
		ret := C.bvdec_receive(d.c, &f)
		if ret == C.bvid_eagain || ret == C.bvid_eof {
			return out, nil
		}
		if ret < 0 {
			return out, avError("decode h264", ret)
		}
		pts := int64(C.bvframe_pts(f))
		if pts == noPTS && len(out) > 0 {
			pts = out[len(out)-1].PTS + 1
		}
		out = append(out, newVideoFrame(f, pts))
	}
}

// Flush returns the pictures the decoder still holds (the last ones in
// presentation order) and resets it: the next access unit must be an IDR.
func (d *VideoDecoder) Flush() ([]VideoFrame, error) {
	if d.c == nil {
		return nil, errVideoDecoderClosed
	}
	defer runtime.KeepAlive(d)
	if ret := C.avcodec_send_packet(d.c.ctx, nil); ret < 0 && ret != C.bvid_eof {
		return nil, avError("flush h264 decoder", ret)
	}
	out, err := d.receive(nil)
	C.avcodec_flush_buffers(d.c.ctx)
	return out, err
}

// Close frees the decoder. Frames it returned stay valid. It is idempotent.
func (d *VideoDecoder) Close() {
	if d.c == nil {
		return
	}
	d.cleanup.Stop()
	C.bvdec_free(d.c)
	d.c = nil
}

// VideoEncoder encodes pictures into H.264 for WebRTC with libx264:
// Constrained Baseline, no B-frames, zero-latency tuning (one packet out
// per picture in, no look-ahead), preset veryfast, Annex-B with SPS and
// PPS in front of every IDR. Not safe for concurrent use.
type VideoEncoder struct {
	c       *C.bvenc
	cleanup runtime.Cleanup

	width, height int
	fullRange     bool
	fpsNum        int
	fpsDen        int
	bitrate       int

	forceKey bool
	flushed  bool
	sent     bool
	lastPTS  int64
}

// NewVideoEncoder opens libx264 for width x height pictures (even numbers:
// 4:2:0 needs them; odd sizes are rounded down, the last column or row
// cropped). fps is the nominal frame rate (it sets the IDR interval, 2 s,
// and the rate control's frame budget; timestamps may vary). bitrate is
// the average in bit/s over any second (VBV of 1 s at that rate); 0 means
// DefaultVideoBitrate. The encoder uses one thread up to 640x480, two
// slices on two threads above (sliced threads add no delay).
//
// Pictures of another size are not scaled: the encoder restarts at the new
// size (see Encode).
func NewVideoEncoder(width, height int, fps float64, bitrate int) (*VideoEncoder, error) {
	if bitrate == 0 {
		bitrate = DefaultVideoBitrate
	}
	w, h := width&^1, height&^1
	if w < 2 || h < 2 || width > maxVideoDimension || height > maxVideoDimension || bitrate < 0 {
		return nil, fmt.Errorf("av: libx264 encoder: bad parameters: %dx%d, bitrate %d", width, height, bitrate)
	}
	if w*h > MaxVideoPixels {
		return nil, fmt.Errorf("av: libx264 encoder: %dx%d is larger than %d pixels", width, height, MaxVideoPixels)
	}
	num, den := fpsRational(fps)
	e := &VideoEncoder{fpsNum: num, fpsDen: den, bitrate: bitrate}
	if err := e.open(w, h, false); err != nil {
		return nil, err
	}
	return e, nil
}

// open opens a codec for w x h and makes it e's.
func (e *VideoEncoder) open(w, h int, fullRange bool) error {
	threads := 1
	if w*h > 640*480 {
		threads = 2
	}
	gop := max(1, keyintSeconds*e.fpsNum/e.fpsDen)
	var bad [64]C.char
	var c *C.bvenc
	full := C.int(0)
	if fullRange {
		full = 1
	}
	if ret := C.bvenc_open(&c, C.int(w), C.int(h), C.int(e.fpsNum), C.int(e.fpsDen), C.int64_t(e.bitrate),
		C.int(gop), C.int(threads), full, &bad[0], C.int(len(bad))); ret < 0 {
		if ret == C.bvid_optnf && bad[0] != 0 {
			return fmt.Errorf("av: open libx264 encoder: this FFmpeg's libx264 wrapper has no option %q", C.GoString(&bad[0]))
		}
		return avError(fmt.Sprintf("open libx264 encoder %dx%d", w, h), ret)
	}
	if e.c != nil {
		e.cleanup.Stop()
		C.bvenc_free(e.c)
	}
	e.c = c
	e.cleanup = runtime.AddCleanup(e, func(c *C.bvenc) { C.bvenc_free(c) }, c)
	e.width, e.height, e.fullRange = w, h, fullRange
	return nil
}

// Width returns the size of the pictures the encoder currently makes.
func (e *VideoEncoder) Width() int { return e.width }

// Height returns the size of the pictures the encoder currently makes.
func (e *VideoEncoder) Height() int { return e.height }

// Bitrate returns the target bitrate in bit/s.
func (e *VideoEncoder) Bitrate() int { return e.bitrate }

// SetBitrate changes the target bitrate (bit/s, > 0) from the next picture
// on.
func (e *VideoEncoder) SetBitrate(bitrate int) {
	if bitrate <= 0 || bitrate == e.bitrate {
		return
	}
	e.bitrate = bitrate
	if e.c != nil {
		C.bvenc_set_bitrate(e.c, C.int64_t(bitrate))
	}
}

// ForceKeyframe makes the next picture encoded an IDR (with SPS and PPS),
// e.g. for a viewer's picture loss indication.
func (e *VideoEncoder) ForceKeyframe() { e.forceKey = true }

// Encode encodes f and returns the packets that are ready: with
// zero-latency tuning, the packet of f itself. f is not changed or
// released; the encoder takes its own reference to the picture, so the
// caller may release f as soon as Encode returns.
//
// f.PTS must increase from one picture to the next; a picture that does
// not is refused with an error and the encoder stays as it was. A picture
// of another size than the encoder's (or another colour range) restarts
// the encoder at that size: the first packet after it is an IDR with the
// new SPS. Pictures in 8 to 16-bit planar YUV or gray other than 4:2:0 are
// converted to 8-bit 4:2:0 first.
func (e *VideoEncoder) Encode(f VideoFrame) ([]VideoPacket, error) {
	if e.c == nil {
		return nil, errVideoEncoderClosed
	}
	if e.flushed {
		return nil, errFlushed
	}
	if f.Released() {
		return nil, errFrameReleased
	}
	defer runtime.KeepAlive(e)
	defer runtime.KeepAlive(f.pic)
	w, h := f.Width&^1, f.Height&^1
	if w < 2 || h < 2 || f.Width > maxVideoDimension || f.Height > maxVideoDimension || w*h > MaxVideoPixels {
		return nil, fmt.Errorf("av: libx264 encoder: picture of %dx%d", f.Width, f.Height)
	}
	if e.sent && f.PTS <= e.lastPTS {
		return nil, fmt.Errorf("av: libx264 encoder: picture at %d does not follow the previous one at %d", f.PTS, e.lastPTS)
	}
	var out []VideoPacket
	if full := C.bvframe_full_range(f.pic.f) != 0; w != e.width || h != e.height || full != e.fullRange {
		// Drain the running codec, then replace it.
		if ret := C.bvenc_send(e.c, nil, 0, 0); ret < 0 {
			return nil, avError("flush libx264", ret)
		}
		var err error
		if out, err = e.receive(out); err != nil {
			return out, err
		}
		if err := e.open(w, h, full); err != nil {
			e.Close()
			return out, err
		}
	}
	idr := C.int(0)
	if e.forceKey {
		idr = 1
	}
	if ret := C.bvenc_send(e.c, f.pic.f, C.int64_t(f.PTS), idr); ret < 0 {
		return out, avError("encode libx264", ret)
	}
	e.forceKey = false
	e.sent = true
	e.lastPTS = f.PTS
	return e.receive(out)
}

func (e *VideoEncoder) receive(out []VideoPacket) ([]VideoPacket, error) {
	for {
		p := e.c.pkt
		ret := C.avcodec_receive_packet(e.c.ctx, p)
		if ret == C.bvid_eagain || ret == C.bvid_eof {
			return out, nil
		}
		if ret < 0 {
			return out, avError("encode libx264", ret)
		}
		data := C.GoBytes(unsafe.Pointer(p.data), p.size)
		out = append(out, VideoPacket{
			NALUs: splitAnnexB(data),
			PTS:   int64(p.pts),
			Key:   C.bvenc_key(p) != 0,
		})
		C.av_packet_unref(p)
	}
}

// Flush returns the packets the encoder still holds (none with
// zero-latency tuning, but libx264 is asked) and ends the stream: later
// Encode calls fail.
func (e *VideoEncoder) Flush() ([]VideoPacket, error) {
	if e.c == nil {
		return nil, errVideoEncoderClosed
	}
	if e.flushed {
		return nil, nil
	}
	defer runtime.KeepAlive(e)
	e.flushed = true
	if ret := C.bvenc_send(e.c, nil, 0, 0); ret < 0 {
		return nil, avError("flush libx264", ret)
	}
	return e.receive(nil)
}

// Close frees the encoder without flushing. It is idempotent.
func (e *VideoEncoder) Close() {
	if e.c == nil {
		return
	}
	e.cleanup.Stop()
	C.bvenc_free(e.c)
	e.c = nil
}
